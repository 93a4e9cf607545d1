//! The dc-health binary: the service skeleton over the library.

fn main() -> std::process::ExitCode {
    meerkat_runtime::service::main::<dc_health::DcHealth>()
}
