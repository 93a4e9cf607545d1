//! The `c2s-gateway` binary itself (its main over the library): a bad configuration stops it
//! with one line naming the setting and exit code 2, before it touches the network.
//!
//! Being an integration test, it also has `cargo test` / `cargo nextest run --workspace` build the
//! binary, which the multi-DC trace test (`tests/tests/multidc/traces.rs`) runs as a process.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::process::Command;

/// Runs the binary with one variable set; returns its single line of stderr.
fn refused(var: &str, value: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_c2s-gateway"))
        .env_remove("MEERKAT_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env(var, value)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    lines[0].to_owned()
}

#[test]
fn a_bad_setting_stops_it_with_one_line_and_exit_code_2() {
    let line = refused("MEERKAT_C2S_ADDR", "not an address");
    assert!(
        line.starts_with("meerkat: invalid config: c2s_addr") && line.contains("MEERKAT_C2S_ADDR"),
        "stderr: {line}"
    );
}

#[test]
fn a_database_pool_of_no_connections_is_refused() {
    let line = refused("MEERKAT_DATABASE_POOL", "0");
    assert!(
        line.starts_with("meerkat: invalid config: database_pool")
            && line.contains("nonzero")
            && line.contains("MEERKAT_DATABASE_POOL"),
        "stderr: {line}"
    );
}

#[test]
fn a_write_deadline_or_rate_of_zero_is_refused() {
    for var in [
        "MEERKAT_WRITE_TIMEOUT_SECS",
        "MEERKAT_CLIENT_BYTES_PER_SEC",
        "MEERKAT_CLIENT_BURST_BYTES",
        "MEERKAT_CLIENT_STANZAS_PER_SEC",
        "MEERKAT_CLIENT_BURST_STANZAS",
    ] {
        let line = refused(var, "0");
        let key = var.trim_start_matches("MEERKAT_").to_lowercase();
        assert!(
            line.starts_with(&format!("meerkat: invalid config: {key}"))
                && line.contains("nonzero"),
            "stderr: {line}"
        );
    }
}

#[test]
fn a_queue_cap_below_the_largest_stanza_is_refused_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_c2s-gateway"))
        .env_remove("MEERKAT_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("MEERKAT_MAX_QUEUED_BYTES", "1000")
        // Valid, so that the check under test is the one that speaks.
        .env("MEERKAT_SCRAM_SECRET", "a-secret-of-enough-length")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(
        lines[0].contains("max_queued_bytes: must be at least max_stanza_bytes"),
        "stderr: {stderr}"
    );
}
