//! The session-replicator binary: the service skeleton over the library.

fn main() -> std::process::ExitCode {
    meerkat_runtime::service::main::<session_replicator::SessionReplicator>()
}
