//! `broker setup`: one DC's broker definitions for the mesh of DCs, through the RabbitMQ
//! management API. The definitions are `meerkat_localstack::federation`'s, which `cargo xtask
//! up` and the test harness apply too; docker compose runs this once per DC.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meerkat_localstack::federation::{self, FederatedDc};

use crate::cli::{BrokerCommand, BrokerSetupArgs};

pub async fn run(cmd: &BrokerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BrokerCommand::Setup(args) => setup(args).await,
    }
}

async fn setup(args: &BrokerSetupArgs) -> anyhow::Result<ExitCode> {
    let upstreams = federation::parse_upstreams(&args.peers)?;
    if args.link_password.is_empty() {
        anyhow::bail!("link_password: must not be empty (the other DCs' links log in with it)");
    }
    if let Some(own) = upstreams.iter().find(|u| u.dc == args.dc) {
        anyhow::bail!("peers: {} is this DC itself", own.dc);
    }
    let broker = FederatedDc {
        dc: args.dc.clone(),
        mgmt_url: args.management_url.trim().to_owned(),
        user: args.management_user.clone(),
        password: args.management_password.clone(),
        vhost: args.vhost.clone(),
        // Only the other DCs' URIs matter here.
        amqp_uri: String::new(),
        via: Default::default(),
        link: Some(federation::LinkUser {
            name: args.link_user.clone(),
            password: args.link_password.clone(),
        }),
        stanza_backlog_ttl_ms: None,
    };
    wait_for_api(&broker, Duration::from_secs(args.wait_secs)).await?;
    federation::configure_dc(&broker, &upstreams)
        .await
        .with_context(|| format!("setting up {}'s broker", args.dc))?;
    for u in &upstreams {
        println!(
            "{}: federating from {} ({})",
            args.dc,
            u.dc,
            federation::strip_credentials(&u.uri)
        );
    }
    println!(
        "{}: the other DCs' links log in as {} (federation only)",
        args.dc, args.link_user
    );
    println!(
        "{}: broker definitions applied at {}",
        args.dc, broker.mgmt_url
    );
    Ok(ExitCode::SUCCESS)
}

/// Polls the management API (the federation link list: it needs the federation plugin too)
/// until it answers; a broker in a container takes a while to boot.
async fn wait_for_api(broker: &FederatedDc, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match federation::link_status(broker).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("management API not answering within {timeout:?}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
