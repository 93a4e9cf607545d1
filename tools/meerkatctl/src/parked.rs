//! `parked replay`: puts the messages of a DC's parking queue back into the queues they were
//! taken from (meerkat_bus::parking::replay), after the upgrade that makes them readable.

use std::process::ExitCode;

use crate::cli::{Cli, ParkedArgs, ParkedCommand};
use crate::endpoints;

pub async fn run(cli: &Cli, cmd: &ParkedCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ParkedCommand::Replay(args) => replay(cli, args).await,
    }
}

async fn replay(cli: &Cli, args: &ParkedArgs) -> anyhow::Result<ExitCode> {
    let url = match (&args.dc, &args.amqp_url) {
        (None, Some(url)) => url.clone(),
        (dc, _) => endpoints::dc(&cli.endpoints, dc.as_deref())?.amqp_url,
    };
    let done = meerkat_bus::parking::replay(&url, args.limit).await?;
    if done.replayed.is_empty() && done.kept.is_empty() {
        println!("nothing parked");
    }
    for (queue, n) in &done.replayed {
        println!("{n} replayed into {queue}");
    }
    for (queue, n) in &done.kept {
        println!("{n} kept parked: {queue} does not exist");
    }
    Ok(if done.kept.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
