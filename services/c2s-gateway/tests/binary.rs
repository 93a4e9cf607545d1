//! The `c2s-gateway` binary itself (its main over the library): a bad configuration stops it
//! with one line naming the setting and exit code 2, before it touches the network.
//!
//! Being an integration test, it also has `cargo test` / `cargo nextest run --workspace` build the
//! binary, which the multi-DC trace test (`tests/tests/multidc/traces.rs`) runs as a process.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_bad_setting_stops_it_with_one_line_and_exit_code_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_c2s-gateway"))
        .env_remove("MEERKAT_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("MEERKAT_C2S_ADDR", "not an address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {stderr}");
    assert!(
        lines[0].starts_with("meerkat: invalid config: c2s_addr")
            && lines[0].contains("MEERKAT_C2S_ADDR"),
        "stderr: {stderr}"
    );
}
