//! Runs the real meerkatctl binary against a fresh database.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use meerkat_store::Store;

async fn fresh_database() -> String {
    meerkat_testkit::infra()
        .await
        .unwrap()
        .fresh_database()
        .await
        .unwrap()
}

fn ctl(db: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meerkatctl"))
        .args(args)
        .env("MEERKAT_DATABASE_URL", db)
        .env_remove("MEERKAT_DOMAIN")
        .env_remove("MEERKAT_ADMIN_URLS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn add_list_passwd_del() {
    let db = fresh_database().await;

    let out = ctl(&db, &["user", "add", "alice", "--password", "pencil"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ctl(&db, &["user", "add", "Bob@example.com"], Some("secret\n"));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = ctl(&db, &["user", "add", "alice", "--password", "x"], None);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"));

    for bad in ["a b", "alice@other.org", "alice@example.com/phone", ""] {
        let out = ctl(&db, &["user", "add", bad, "--password", "x"], None);
        assert!(!out.status.success(), "accepted {bad:?}");
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }

    let out = ctl(&db, &["user", "list"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alice\nbob\n");

    let store = Store::connect(&db).await.unwrap();
    assert!(store
        .credentials("bob")
        .await
        .unwrap()
        .unwrap()
        .verify_plain("secret"));
    let before = store.credentials("alice").await.unwrap().unwrap();
    assert!(before.verify_plain("pencil"));
    let out = ctl(
        &db,
        &["user", "passwd", "alice@example.com", "--password", "pen"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after = store.credentials("alice").await.unwrap().unwrap();
    assert_ne!(after.sha256, before.sha256);
    assert!(after.verify_plain("pen"));
    assert!(!after.verify_plain("pencil"));
    let out = ctl(
        &db,
        &["user", "passwd", "nobody", "--password", "pen"],
        None,
    );
    assert!(!out.status.success());

    let out = ctl(&db, &["user", "del", "alice"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ctl(&db, &["user", "del", "alice"], None);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such user"));
    assert_eq!(stdout(&ctl(&db, &["user", "list"], None)), "bob\n");

    let out = ctl(&db, &["status"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 accounts"), "{}", stdout(&out));
}

#[tokio::test]
async fn status_probes_admin_endpoints() {
    use axum::http::StatusCode;
    use axum::routing::get;

    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let up = format!("http://{addr}");
    // A port nothing listens on (bound, then released).
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    let bin = env!("CARGO_BIN_EXE_meerkatctl");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["status", "--admin", &format!("{up},{down}")])
            .env_remove("MEERKAT_DATABASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = stdout(&out);
    assert!(!out.status.success(), "a down service must fail the status");
    assert!(
        text.contains(&format!("http://{addr}: healthz up, readyz down")),
        "{text}"
    );
    assert!(text.contains("healthz down, readyz down"), "{text}");

    let out = Command::new(bin)
        .arg("status")
        .env_remove("MEERKAT_DATABASE_URL")
        .env_remove("MEERKAT_ADMIN_URLS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1);
}

/// `meerkatctl status | head -0`: the reader is gone before meerkatctl writes a line. It ends
/// at once without a word on stderr (no panic), with the status of a tool killed by SIGPIPE.
#[test]
fn a_closed_output_pipe_ends_it_quietly() {
    // A pipe whose only reader (`true`) has exited: every write to it fails with EPIPE.
    let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
    let write_end = reader.stdin.take().unwrap();
    assert!(reader.wait().unwrap().success());
    // A port nothing listens on: the status line says so at once.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = Command::new(env!("CARGO_BIN_EXE_meerkatctl"))
        .args(["status", "--admin", &down])
        .env_remove("MEERKAT_DATABASE_URL")
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(stderr(&out), "");
    assert_eq!(
        out.status.code(),
        Some(meerkat_localstack::closed_pipe::CLOSED_PIPE_EXIT)
    );
}
