use std::net::SocketAddr;

use meerkat_runtime::config::{load_from, load_or_exit};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ServiceConfig {
    c2s_addr: SocketAddr,
    dc: String,
    workers: u16,
    tls: bool,
    peers: Vec<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            c2s_addr: "0.0.0.0:5222".parse().unwrap(),
            dc: "dc1".into(),
            workers: 4,
            tls: true,
            peers: vec![],
        }
    }
}

#[test]
fn defaults_alone() {
    let conf: ServiceConfig = load_from(None, &[]).unwrap();
    assert_eq!(conf, ServiceConfig::default());
}

#[test]
fn toml_overrides_defaults_and_env_overrides_toml() {
    let toml = r#"
        c2s_addr = "127.0.0.1:15222"
        dc = "dc2"
        workers = 8
    "#;
    let env = [
        ("MEERKAT_DC", "dc3"),
        ("MEERKAT_TLS", "false"),
        ("MEERKAT_PEERS", "[\"dc1\", \"dc2\"]"),
        // Not ours: ignored like any other variable of the process.
        ("HOME", "/root"),
    ];
    let conf: ServiceConfig = load_from(Some(toml), &env).unwrap();
    assert_eq!(
        conf,
        ServiceConfig {
            c2s_addr: "127.0.0.1:15222".parse().unwrap(),
            dc: "dc3".into(),
            workers: 8,
            tls: false,
            peers: vec!["dc1".into(), "dc2".into()],
        }
    );
}

#[test]
fn env_number_for_a_string_key_stays_a_string() {
    let conf: ServiceConfig = load_from(None, &[("MEERKAT_DC", "2")]).unwrap();
    assert_eq!(conf.dc, "2");
}

#[test]
fn bad_env_value_names_key_and_variable() {
    let error = load_from::<ServiceConfig>(None, &[("MEERKAT_C2S_ADDR", "nowhere")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid config: c2s_addr: invalid socket address syntax (from MEERKAT_C2S_ADDR)"
    );
}

#[test]
fn bad_toml_value_names_key() {
    let error = load_from::<ServiceConfig>(Some("workers = -1"), &[]).unwrap_err();
    let line = error.to_string();
    assert_eq!(error.key.as_deref(), Some("workers"));
    assert!(line.starts_with("invalid config: workers: "), "{line}");
    assert!(!line.contains('\n'), "{line}");
}

/// Runs `load_or_exit` in a child copy of this test binary, so its `exit(2)` ends the child only.
#[test]
fn load_or_exit_prints_one_line_and_exits_2() {
    if std::env::var_os("RUNTIME_TEST_CHILD").is_some() {
        let _: ServiceConfig = load_or_exit();
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "config::load_or_exit_prints_one_line_and_exits_2",
            "--nocapture",
        ])
        .env("RUNTIME_TEST_CHILD", "1")
        .env("MEERKAT_WORKERS", "many")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        ["meerkat: invalid config: workers: invalid type: found string \"many\", expected u16 (from MEERKAT_WORKERS)"]
    );
}

#[test]
fn bad_env_number_keeps_the_number_error() {
    let error = load_from::<ServiceConfig>(None, &[("MEERKAT_WORKERS", "-1")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid config: workers: invalid value signed int `-1`, expected u16 (from MEERKAT_WORKERS)"
    );
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct WithOptions {
    password: Option<String>,
    limit: Option<u32>,
}

#[test]
fn env_fills_optional_keys_absent_from_defaults() {
    let conf: WithOptions = load_from(
        None,
        &[("MEERKAT_PASSWORD", "1234"), ("MEERKAT_LIMIT", "10")],
    )
    .unwrap();
    assert_eq!(
        conf,
        WithOptions {
            password: Some("1234".into()),
            limit: Some(10)
        }
    );
}
