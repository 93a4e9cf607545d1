//! meerkatctl: administration of a Meerkat deployment (accounts, service status, sessions,
//! links between DCs, broker setup, parked messages), in the manner of ejabberdctl. Every failure is one line on stderr and a non-zero exit.

mod broker;
mod cli;
mod dc;
mod dc_status;
mod endpoints;
mod parked;
mod password;
mod replication;
mod sessions;
mod status;
mod user;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    meerkat_localstack::exit_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::User(cmd) => user::run(&cli, cmd).await,
        Command::Status(args) => status::run(&cli, args).await,
        Command::Sessions(args) => sessions::run(&cli, args).await,
        Command::Dc(cmd) => dc::run(&cli, cmd).await,
        Command::Broker(cmd) => broker::run(cmd).await,
        Command::Parked(cmd) => parked::run(&cli, cmd).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meerkatctl: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
