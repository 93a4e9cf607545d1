//! `dc links`: the federation links of one DC's broker, from the RabbitMQ management API
//! (`GET /api/federation-links/<vhost>`), one line each. (`dc status` is in `dc_status.rs`,
//! `dc replication` in `replication.rs`.)

use std::process::ExitCode;

use meerkat_localstack::federation::{self, FederatedDc, LinkStatus};

use crate::cli::{Cli, DcCommand, LinksArgs};
use crate::endpoints;

pub async fn run(cli: &Cli, cmd: &DcCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DcCommand::Links(args) => links(cli, args).await,
        DcCommand::Status(args) => crate::dc_status::run(cli, args).await,
        DcCommand::Replication(args) => crate::replication::run(cli, args).await,
    }
}

async fn links(cli: &Cli, args: &LinksArgs) -> anyhow::Result<ExitCode> {
    let broker = match (&args.dc, &args.management_url) {
        (None, Some(url)) => FederatedDc {
            dc: String::new(),
            mgmt_url: url.trim().to_owned(),
            user: args.management_user.clone(),
            password: args.management_password.clone(),
            vhost: args.vhost.clone(),
            amqp_uri: String::new(),
            via: Default::default(),
            link: None,
            stanza_backlog_ttl_ms: None,
        },
        (dc, _) => {
            let dc = endpoints::dc(&cli.endpoints, dc.as_deref())?;
            FederatedDc {
                vhost: endpoints::vhost_of(&dc.amqp_url),
                dc: dc.dc,
                mgmt_url: dc.management_url,
                user: dc.management_user,
                password: dc.management_password,
                amqp_uri: dc.amqp_url,
                via: Default::default(),
                link: None,
                stanza_backlog_ttl_ms: None,
            }
        }
    };
    let mut links = federation::link_status(&broker).await?;
    if links.is_empty() {
        println!("no federation links");
        return Ok(ExitCode::SUCCESS);
    }
    links.sort_by(|a, b| (&a.upstream, &a.exchange).cmp(&(&b.upstream, &b.exchange)));
    print!("{}", render(&links));
    Ok(if links.iter().all(|l| l.status == "running") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A header, then `upstream  exchange  status  [error]` per link, in columns.
fn render(links: &[LinkStatus]) -> String {
    let exchange = |l: &LinkStatus| l.exchange.clone().unwrap_or_else(|| "-".into());
    let w_up = links
        .iter()
        .map(|l| l.upstream.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let w_ex = links
        .iter()
        .map(|l| exchange(l).len())
        .max()
        .unwrap_or(0)
        .max(8);
    let w_st = links
        .iter()
        .map(|l| l.status.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!("{:<w_up$}  {:<w_ex$}  status\n", "upstream", "exchange");
    for l in links {
        let mut line = format!(
            "{:<w_up$}  {:<w_ex$}  {:<w_st$}",
            l.upstream,
            exchange(l),
            l.status
        );
        if l.status != "running" {
            if let Some(e) = &l.error {
                line.push_str("  ");
                line.push_str(&e.replace('\n', " "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_the_error_of_a_broken_link() {
        let links = vec![
            LinkStatus {
                upstream: "meerkat-dc2".into(),
                exchange: Some("meerkat.inter.stanzas".into()),
                status: "running".into(),
                error: None,
            },
            LinkStatus {
                upstream: "meerkat-dc3".into(),
                exchange: Some("meerkat.inter.stanzas".into()),
                status: "error".into(),
                error: Some("{econnrefused,\n ...}".into()),
            },
        ];
        assert_eq!(
            render(&links),
            "upstream     exchange               status\n\
             meerkat-dc2  meerkat.inter.stanzas  running\n\
             meerkat-dc3  meerkat.inter.stanzas  error    {econnrefused,  ...}\n"
        );
    }
}
