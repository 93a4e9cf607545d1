//! `status`: account count from the database and each service's /healthz and /readyz.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::{Cli, StatusArgs};
use crate::user::connect;

pub async fn run(cli: &Cli, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    if cli.database_url.is_none() && args.admin.is_empty() {
        bail!("nothing to check: give --database-url and/or --admin URLs");
    }
    let mut healthy = true;
    if cli.database_url.is_some() {
        let store = connect(cli).await?;
        let count = store.count_accounts().await.context("counting accounts")?;
        println!("database: up, {count} accounts");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .context("building HTTP client")?;
    for base in args
        .admin
        .iter()
        .map(|u| u.trim().trim_end_matches('/'))
        .filter(|u| !u.is_empty())
    {
        let health = probe(&http, &format!("{base}/healthz")).await;
        let ready = probe(&http, &format!("{base}/readyz")).await;
        healthy &= health && ready;
        println!("{base}: healthz {}, readyz {}", word(health), word(ready));
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn probe(http: &reqwest::Client, url: &str) -> bool {
    matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
}

fn word(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}
