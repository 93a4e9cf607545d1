//! Reading a password: from the terminal without echo (asked twice), or the first line of a
//! piped standard input, for scripts.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};

pub fn obtain(given: Option<&str>) -> anyhow::Result<String> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading password")?;
        let again = rpassword::prompt_password("Repeat password: ").context("reading password")?;
        if first != again {
            bail!("passwords do not match");
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}
