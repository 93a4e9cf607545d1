//! The c2s gateway binary: the service skeleton over the library.

fn main() -> std::process::ExitCode {
    meerkat_runtime::service::main::<c2s_gateway::Gateway>()
}
