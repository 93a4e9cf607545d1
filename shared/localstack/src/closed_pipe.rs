//! The command-line tools (`cargo xtask`, `meerkatctl`, `meerkat-bench`; every one of them
//! depends on this crate) end quietly when what reads their output goes away, as `cmd | head`
//! expects of any Unix tool. Rust ignores SIGPIPE, so a write to a closed pipe fails and
//! `println!` panics with a message and a backtrace hint; resetting the signal would need
//! `unsafe` (forbidden in this workspace), so a panic hook recognises that panic instead.

/// The exit status of a tool whose output pipe closed: what a shell reports for a process
/// killed by SIGPIPE (128 + 13).
pub const CLOSED_PIPE_EXIT: i32 = 141;

/// Installs the hook: a panic of `print!`/`println!`/`eprintln!` on a closed pipe ends the
/// process at once with [`CLOSED_PIPE_EXIT`] and without a word; every other panic is
/// reported as before. Call it first thing in `main`.
pub fn exit_quietly_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_closed_pipe(panic_message(info.payload())) {
            std::process::exit(CLOSED_PIPE_EXIT);
        }
        default(info);
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else {
        ""
    }
}

/// Whether a panic message is std's for a print to a closed pipe (`failed printing to stdout:
/// Broken pipe (os error 32)`).
fn is_closed_pipe(message: &str) -> bool {
    let broken_pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe).to_string();
    let os_broken_pipe = std::io::Error::from_raw_os_error(32).to_string();
    message.starts_with("failed printing to std")
        && (message.contains(&os_broken_pipe) || message.contains(&broken_pipe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_print_panics_on_a_closed_pipe_count() {
        let epipe = std::io::Error::from_raw_os_error(32);
        assert!(is_closed_pipe(&format!(
            "failed printing to stdout: {epipe}"
        )));
        assert!(is_closed_pipe(&format!(
            "failed printing to stderr: {epipe}"
        )));
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!is_closed_pipe(&format!(
            "failed printing to stdout: {other}"
        )));
        assert!(!is_closed_pipe(&format!("config: {epipe}")));
        assert!(!is_closed_pipe(""));
    }
}
