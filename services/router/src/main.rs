//! The router binary: the service skeleton over the library.

fn main() -> std::process::ExitCode {
    meerkat_runtime::service::main::<router::Router>()
}
