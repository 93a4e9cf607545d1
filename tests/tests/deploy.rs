//! Checks of the docker compose stack that need no Docker engine: docker-compose.yml parses,
//! references only files, services and volumes that exist, sets only `MEERKAT_*` variables the
//! services read (their config structs) and the same peers everywhere in a DC; the Dockerfile's
//! build inputs exist. (That the broker definitions load into a real broker is
//! tools/meerkatctl/tests/broker.rs.)

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The compose file with YAML merge keys (`<<: *anchor`) applied, as compose applies them.
fn compose() -> Yaml {
    let docs = YamlLoader::load_from_str(&read("docker-compose.yml")).expect("YAML");
    assert_eq!(docs.len(), 1, "one document");
    merge_keys(docs.into_iter().next().unwrap())
}

fn merge_keys(y: Yaml) -> Yaml {
    match y {
        Yaml::Hash(h) => {
            let merge = Yaml::String("<<".into());
            let mut out = yaml_rust2::yaml::Hash::new();
            if let Some(base) = h.get(&merge) {
                let bases = match base {
                    Yaml::Array(list) => list.clone(),
                    one => vec![one.clone()],
                };
                for b in bases {
                    let Yaml::Hash(b) = merge_keys(b) else {
                        panic!("<< takes a mapping")
                    };
                    out.extend(b);
                }
            }
            for (k, v) in h {
                if k != merge {
                    out.insert(k, merge_keys(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(list) => Yaml::Array(list.into_iter().map(merge_keys).collect()),
        other => other,
    }
}

fn services(c: &Yaml) -> BTreeMap<String, Yaml> {
    let h = c["services"].as_hash().expect("services");
    h.iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

fn str_list(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_owned()).collect(),
        Yaml::String(s) => vec![s.clone()],
        Yaml::BadValue => vec![],
        other => panic!("expected a list of strings: {other:?}"),
    }
}

/// `environment:` as a map, either form (`KEY: value` or `- KEY=value`).
fn environment(s: &Yaml) -> BTreeMap<String, String> {
    match &s["environment"] {
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => panic!("environment value {other:?}"),
                };
                (k.as_str().unwrap().to_owned(), v)
            })
            .collect(),
        Yaml::Array(_) => str_list(&s["environment"])
            .into_iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The binary a service of our image runs (`command[0]`), `None` for other images.
fn binary(s: &Yaml) -> Option<String> {
    s["build"].as_hash()?;
    str_list(&s["command"]).into_iter().next()
}

#[test]
fn compose_references_only_what_exists() {
    let c = compose();
    let services = services(&c);
    assert!(!services.is_empty());
    let volumes: BTreeSet<String> = c["volumes"]
        .as_hash()
        .map(|h| h.keys().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    for (name, s) in &services {
        // The build context and its Dockerfile.
        if let Some(build) = s["build"].as_hash() {
            let ctx = build
                .get(&Yaml::String("context".into()))
                .and_then(Yaml::as_str)
                .unwrap_or(".");
            let ctx = root().join(ctx);
            assert!(ctx.is_dir(), "{name}: build context {}", ctx.display());
            let file = s["build"]["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(ctx.join(file).is_file(), "{name}: dockerfile {file}");
        }
        assert!(
            s["image"].as_str().is_some() || s["build"].as_hash().is_some(),
            "{name}: neither image nor build"
        );
        // Bind mounts name files of the repository; named volumes are declared.
        for v in str_list(&s["volumes"]) {
            let source = v.split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                let path = root().join(source);
                assert!(path.exists(), "{name}: mounts missing {source}");
            } else {
                assert!(
                    volumes.contains(source),
                    "{name}: volume {source} not declared"
                );
            }
        }
        for f in str_list(&s["env_file"]) {
            assert!(root().join(&f).is_file(), "{name}: env_file {f}");
        }
        // depends_on, list or map form, names services of this file.
        let deps: Vec<String> = match &s["depends_on"] {
            Yaml::Hash(h) => h.keys().map(|k| k.as_str().unwrap().to_owned()).collect(),
            other => str_list(other),
        };
        for d in deps {
            assert!(services.contains_key(&d), "{name}: depends on unknown {d}");
            if let Some(cond) = s["depends_on"][d.as_str()]["condition"].as_str() {
                assert!(
                    [
                        "service_started",
                        "service_healthy",
                        "service_completed_successfully"
                    ]
                    .contains(&cond),
                    "{name}: condition {cond}"
                );
                if cond == "service_healthy" {
                    assert!(
                        !services[&d]["healthcheck"].is_badvalue(),
                        "{name} waits for {d} to be healthy, which has no healthcheck"
                    );
                }
            }
        }
    }
}

/// Every `${VAR}` the compose file uses is set in the committed .env (or has a default).
#[test]
fn compose_variables_are_in_dot_env() {
    let text = read("docker-compose.yml");
    let defined: BTreeSet<String> = read(".env")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').expect("KEY=value").0.to_owned())
        .collect();
    let mut rest = text.as_str();
    let mut used = BTreeSet::new();
    while let Some(at) = rest.find("${") {
        let escaped = at > 0 && rest.as_bytes()[at - 1] == b'$';
        let end = rest[at..].find('}').expect("closing }") + at;
        let inner = &rest[at + 2..end];
        // `${VAR}`, `${VAR:?message}`; `${VAR:-default}` needs no .env.
        let name_end = inner.find([':', '-', '?']).unwrap_or(inner.len());
        let has_default = inner[name_end..].trim_start_matches(':').starts_with('-');
        if !escaped && !has_default {
            used.insert(inner[..name_end].to_owned());
        }
        rest = &rest[end..];
    }
    assert!(!used.is_empty());
    for v in &used {
        assert!(defined.contains(v), "${{{v}}} is not set in .env");
    }
}

/// The config keys of each service binary: the fields of its config, as `MEERKAT_<KEY>`.
fn config_vars() -> BTreeMap<&'static str, BTreeSet<String>> {
    fn vars<T: serde::Serialize>(config: T) -> BTreeSet<String> {
        let v = serde_json::to_value(config).unwrap();
        v.as_object()
            .unwrap()
            .keys()
            .map(|k| format!("MEERKAT_{}", k.to_ascii_uppercase()))
            .collect()
    }
    // meerkatctl reads its variables through clap (`env = "MEERKAT_..."`).
    let cli = read("tools/meerkatctl/src/cli.rs");
    let ctl = cli
        .split("env = \"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .collect();
    BTreeMap::from([
        ("c2s-gateway", vars(c2s_gateway::Config::default())),
        ("router", vars(router::Config::default())),
        (
            "session-replicator",
            vars(session_replicator::Config::default()),
        ),
        ("dc-health", vars(dc_health::Config::default())),
        ("meerkatctl", ctl),
    ])
}

#[test]
fn compose_sets_only_variables_the_services_read() {
    let c = compose();
    let known = config_vars();
    let mut seen = BTreeSet::new();
    for (name, s) in services(&c) {
        let Some(bin) = binary(&s) else { continue };
        let vars = known
            .get(bin.as_str())
            .unwrap_or_else(|| panic!("{name}: unknown binary {bin}"));
        seen.insert(bin.clone());
        let env = environment(&s);
        for k in env.keys().filter(|k| k.starts_with("MEERKAT_")) {
            assert!(vars.contains(k), "{name} ({bin}) does not read {k}");
        }
        if bin != "meerkatctl" {
            // Every service is told its DC and broker, listens for its healthcheck on the
            // admin port, and exports its spans to the trace viewer.
            for k in [
                "MEERKAT_DC",
                "MEERKAT_AMQP_URL",
                "MEERKAT_ADMIN_ADDR",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ] {
                assert!(env.contains_key(k), "{name}: {k} not set");
            }
            let port = env["MEERKAT_ADMIN_ADDR"].rsplit(':').next().unwrap();
            let check = str_list(&s["healthcheck"]["test"]).join(" ");
            assert!(
                check.contains(&format!(":{port}/readyz")),
                "{name}: healthcheck `{check}` is not /readyz on the admin port {port}"
            );
        }
        if bin == "c2s-gateway" {
            // `--scale` needs both: replicas share neither a name nor a host port.
            assert!(s["container_name"].is_badvalue(), "{name}: container_name");
            assert!(s["ports"].is_badvalue(), "{name}: host ports");
            assert!(
                env.get("MEERKAT_INSTANCE_ID").is_none_or(|v| v.is_empty()),
                "{name}: a fixed instance id would be shared by every replica"
            );
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "c2s-gateway",
            "dc-health",
            "meerkatctl",
            "router",
            "session-replicator"
        ]
    );
}

/// The broker setup, the session replicator and the health service of a DC name the other
/// DCs by the same URIs: the replicator and the health service compare them with what the
/// federation plugin writes into `x-received-from`, i.e. the upstreams the setup configured.
#[test]
fn peers_agree_within_each_dc() {
    let c = compose();
    let mut per_dc: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, s) in services(&c) {
        let env = environment(&s);
        if let Some(peers) = env.get("MEERKAT_PEERS") {
            let dc = env
                .get("MEERKAT_DC")
                .unwrap_or_else(|| panic!("{name}: no DC"));
            assert!(!peers.contains(&format!("{dc}=")), "{name}: peers itself");
            per_dc.entry(dc.clone()).or_default().insert(peers.clone());
        }
    }
    assert_eq!(per_dc.keys().collect::<Vec<_>>(), ["dc1", "dc2"]);
    for (dc, peers) in per_dc {
        assert_eq!(peers.len(), 1, "{dc}: peers differ: {peers:?}");
    }
}

/// Only the XMPP ports are published on every interface (`MEERKAT_XMPP_BIND`, unset: all);
/// the operator endpoints (management UIs, load balancer stats, trace viewer) are bound to
/// `MEERKAT_OPERATOR_BIND`, loopback in the committed .env and when the variable is unset.
#[test]
fn operator_endpoints_are_published_on_loopback_unless_opted_in() {
    let c = compose();
    // XMPP and web clients (HTTP, HTTPS).
    let xmpp = [
        "5222", "5223", "5232", "5233", "5280", "5281", "5290", "5291",
    ];
    let bind = "${MEERKAT_OPERATOR_BIND:-127.0.0.1}:";
    let xmpp_bind = "${MEERKAT_XMPP_BIND:-0.0.0.0}:";
    let mut operator = BTreeSet::new();
    for (name, s) in services(&c) {
        for p in str_list(&s["ports"]) {
            if let Some(rest) = p.strip_prefix(xmpp_bind) {
                let host_port = rest.split(':').next().unwrap();
                assert!(xmpp.contains(&host_port), "{name}: {p}");
                assert_eq!(rest.split(':').count(), 2, "{name}: {p}");
                continue;
            }
            let host_port = p.trim_start_matches(bind).split(':').next().unwrap();
            assert!(
                !xmpp.contains(&host_port),
                "{name}: {p} not on MEERKAT_XMPP_BIND"
            );
            assert!(
                p.starts_with(bind),
                "{name}: {p} is published on every interface"
            );
            operator.insert(host_port.to_owned());
        }
    }
    assert_eq!(
        operator.into_iter().collect::<Vec<_>>(),
        ["15672", "15673", "16686", "8404", "8405"]
    );
    assert!(read(".env")
        .lines()
        .any(|l| l.trim() == "MEERKAT_OPERATOR_BIND=127.0.0.1"));
}

/// The federation links log in to the other DC's broker as its link user, whose password
/// that DC's broker setup is given, never as that broker's administrator.
#[test]
fn federation_links_use_the_link_user() {
    let c = compose();
    for (name, s) in services(&c) {
        let env = environment(&s);
        let Some(peers) = env.get("MEERKAT_PEERS") else {
            continue;
        };
        let dc = &env["MEERKAT_DC"];
        for (other, uri) in peers.split(',').filter_map(|p| p.split_once('=')) {
            let up = other.to_ascii_uppercase();
            assert!(
                !uri.contains("RABBITMQ_USER"),
                "{name}: {uri} logs in as the administrator"
            );
            assert!(
                uri.starts_with(&format!(
                    "amqp://meerkat-link:${{{up}_LINK_PASSWORD}}@{other}-rabbitmq:"
                )),
                "{name} ({dc}): {uri}"
            );
        }
        if binary(&s).as_deref() == Some("meerkatctl") {
            let up = dc.to_ascii_uppercase();
            assert_eq!(
                env.get("MEERKAT_LINK_PASSWORD").map(String::as_str),
                Some(format!("${{{up}_LINK_PASSWORD}}").as_str()),
                "{name}: the link user the other DC logs in as"
            );
        }
    }
}

/// The HAProxy configuration's shape: every section once, each keyword line indented inside a
/// section, and each frontend's one `default_backend` a backend defined here. (`haproxy -c`
/// in the compose check is the full proof; this catches a broken edit without Docker.)
#[test]
fn haproxy_sections_are_whole() {
    let cfg = read("deploy/haproxy/haproxy.cfg");
    let mut sections = BTreeSet::new();
    let mut backends = BTreeSet::new();
    let mut defaults: Vec<(String, String)> = Vec::new();
    let mut current: Option<String> = None;
    for line in cfg.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            assert!(
                sections.insert(trimmed.to_owned()),
                "section twice: {trimmed}"
            );
            if let Some(b) = trimmed.strip_prefix("backend ") {
                backends.insert(b.to_owned());
            }
            current = Some(trimmed.to_owned());
            continue;
        }
        let section = current.clone().expect("a keyword line before any section");
        let word = trimmed.split_whitespace().next().unwrap();
        assert!(
            word.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{section}: not a keyword: {trimmed}"
        );
        if word == "default_backend" {
            let target = trimmed.split_whitespace().nth(1).unwrap_or_default();
            defaults.push((section, target.to_owned()));
        }
    }
    let frontends: Vec<&String> = sections
        .iter()
        .filter(|s| s.starts_with("frontend "))
        .collect();
    assert!(!frontends.is_empty());
    for f in frontends {
        let named: Vec<&(String, String)> = defaults.iter().filter(|(s, _)| s == f).collect();
        assert_eq!(named.len(), 1, "{f}: one default_backend");
        assert!(
            backends.contains(&named[0].1),
            "{f}: no backend {}",
            named[0].1
        );
    }
}

/// Each load balancer forwards to a gateway service of this file, and the brokers take the
/// configuration files the local stack uses too.
#[test]
fn load_balancers_and_brokers() {
    let c = compose();
    let services = services(&c);
    let haproxy = read("deploy/haproxy/haproxy.cfg");
    assert!(haproxy.contains("${GATEWAY_HOST}") && haproxy.contains("127.0.0.11"));
    let mut lbs = 0;
    for (name, s) in &services {
        if let Some(gw) = environment(s).get("GATEWAY_HOST") {
            lbs += 1;
            assert_eq!(
                binary(&services[gw]).as_deref(),
                Some("c2s-gateway"),
                "{name}"
            );
        }
        if s["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("rabbitmq:"))
        {
            let mounts = str_list(&s["volumes"]).join(" ");
            for f in [
                "deploy/rabbitmq/rabbitmq.conf",
                "deploy/rabbitmq/enabled_plugins",
            ] {
                assert!(mounts.contains(f), "{name} does not mount {f}");
            }
        }
    }
    assert_eq!(lbs, 2);
}

/// Instructions of a Dockerfile, continuation lines joined.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') && current.is_empty() || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn dockerfile_inputs_exist() {
    let text = read("deploy/Dockerfile");
    let steps = instructions(&text);
    let mut copies = 0;
    for step in &steps {
        let words: Vec<&str> = step.split_whitespace().collect();
        if words[0] != "COPY" || words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        copies += 1;
        let args: Vec<&&str> = words[1..].iter().filter(|w| !w.starts_with("--")).collect();
        for src in &args[..args.len() - 1] {
            assert!(root().join(src).exists(), "COPY source {src} missing");
        }
    }
    assert!(copies > 0);
    // The packages built are members of the workspace, and the binaries copied out are theirs.
    let build = steps
        .iter()
        .find(|s| s.contains("cargo build --release"))
        .expect("release build");
    let cargo_build = build
        .split("&&")
        .find(|c| c.contains("cargo build"))
        .unwrap();
    let packages: Vec<&str> = cargo_build
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    assert_eq!(
        packages,
        [
            "c2s-gateway",
            "router",
            "session-replicator",
            "dc-health",
            "meerkatctl"
        ]
    );
    let manifest = read("Cargo.toml");
    for p in &packages {
        let dir = ["services", "tools"]
            .iter()
            .map(|d| format!("{d}/{p}"))
            .find(|d| manifest.contains(&format!("\"{d}\"")))
            .unwrap_or_else(|| panic!("{p} is not a workspace member"));
        assert!(
            read(&format!("{dir}/Cargo.toml")).contains(&format!("name = \"{p}\"")),
            "{dir}"
        );
        assert!(
            build.contains(&format!("target/release/{p}")),
            "{p} not copied"
        );
    }
    // The runtime stage runs as a user of its own, and nothing secret is baked in.
    let runtime = text.split("AS runtime").nth(1).expect("runtime stage");
    assert!(runtime.contains("\nUSER "), "runtime runs as root");
    for secret in ["PASSWORD", "MEERKAT_AMQP_URL", "MEERKAT_DATABASE_URL"] {
        assert!(!text.contains(secret), "the image sets {secret}");
    }
    // The build context leaves out the build output.
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim_end_matches('/') == "target"));
}
