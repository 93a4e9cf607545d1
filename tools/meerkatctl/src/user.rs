//! `user` commands: add, passwd, del, list.

use std::process::ExitCode;

use anyhow::{bail, Context};
use meerkat_auth::Credentials;
use meerkat_store::{Store, StoreError};

use crate::cli::{Cli, UserCommand};
use crate::password;

pub async fn run(cli: &Cli, cmd: &UserCommand) -> anyhow::Result<ExitCode> {
    // Validate the name and read the password before touching the database.
    let prepared = match cmd {
        UserCommand::Add { user, password } | UserCommand::Passwd { user, password } => {
            let name = account_name(user, &cli.domain)?;
            let creds = Credentials::derive(
                &password::obtain(password.as_deref())?,
                Credentials::DEFAULT_ITERATIONS,
            )
            .context("unusable password")?;
            Some((name, Some(creds)))
        }
        UserCommand::Del { user } => Some((account_name(user, &cli.domain)?, None)),
        UserCommand::List => None,
    };
    let store = connect(cli).await?;
    match (cmd, prepared) {
        (UserCommand::Add { .. }, Some((name, Some(creds)))) => {
            match store.create_account(&name, &creds).await {
                Err(StoreError::Conflict) => bail!("user {name}@{} already exists", cli.domain),
                other => other.context("creating account")?,
            }
        }
        (UserCommand::Passwd { .. }, Some((name, Some(creds)))) => {
            if !store
                .set_credentials(&name, &creds)
                .await
                .context("changing password")?
            {
                bail!("no such user {name}@{}", cli.domain);
            }
        }
        (UserCommand::Del { .. }, Some((name, _))) => {
            if !store
                .delete_account(&name)
                .await
                .context("deleting account")?
            {
                bail!("no such user {name}@{}", cli.domain);
            }
        }
        _ => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            for name in store.list_accounts().await.context("listing accounts")? {
                // A closed pipe (`| head`) ends the listing quietly.
                if writeln!(out, "{name}").is_err() {
                    break;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn connect(cli: &Cli) -> anyhow::Result<Store> {
    let Some(url) = cli.database_url.as_deref() else {
        bail!("no database: give --database-url or set MEERKAT_DATABASE_URL");
    };
    Store::connect(url)
        .await
        .context("cannot connect to the database")
}

/// `user` or `user@domain` → the nodeprepped account name; the domain must be ours.
pub fn account_name(input: &str, domain: &str) -> anyhow::Result<String> {
    let input = input.trim();
    let node = if input.contains('@') {
        let jid = jid::BareJid::new(input)
            .map_err(|e| anyhow::anyhow!("malformed user {input:?}: {e}"))?;
        let ours = jid::DomainPart::new(domain)
            .map_err(|e| anyhow::anyhow!("malformed domain {domain:?}: {e}"))?;
        if jid.domain() != &*ours {
            bail!("user {input:?} is not in domain {domain}");
        }
        match jid.node() {
            Some(node) => node.to_string(),
            None => bail!("malformed user {input:?}: no local part"),
        }
    } else {
        jid::NodePart::new(input)
            .map_err(|e| anyhow::anyhow!("malformed user {input:?}: {e}"))?
            .to_string()
    };
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::account_name;

    #[test]
    fn names() {
        assert_eq!(account_name("alice", "example.com").unwrap(), "alice");
        assert_eq!(
            account_name("Alice@Example.com", "example.com").unwrap(),
            "alice"
        );
        assert!(account_name("alice@other.org", "example.com").is_err());
        assert!(account_name("alice@example.com/res", "example.com").is_err());
        assert!(account_name("a b", "example.com").is_err());
        assert!(account_name("", "example.com").is_err());
        assert!(account_name("@example.com", "example.com").is_err());
        assert!(account_name("a\"b", "example.com").is_err());
    }
}
