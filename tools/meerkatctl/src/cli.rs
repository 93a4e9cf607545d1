//! Command-line grammar.

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "meerkatctl",
    version,
    about = "Administer a Meerkat XMPP deployment"
)]
pub struct Cli {
    /// PostgreSQL URL of this DC's database.
    #[arg(
        long,
        env = "MEERKAT_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The XMPP domain served.
    #[arg(
        long,
        env = "MEERKAT_DOMAIN",
        default_value = "example.com",
        global = true
    )]
    pub domain: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Account count and the health of services' admin endpoints.
    Status(StatusArgs),
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account.
    Add {
        /// `user` or `user@domain`.
        user: String,
        /// The password; read from standard input when omitted.
        #[arg(long)]
        password: Option<String>,
    },
    /// Change an account's password.
    Passwd {
        user: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account and all its data.
    Del { user: String },
    /// List accounts, one per line.
    List,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Admin base URLs of services (e.g. http://127.0.0.1:9100), checked at /healthz and /readyz.
    #[arg(long = "admin", env = "MEERKAT_ADMIN_URLS", value_delimiter = ',')]
    pub admin: Vec<String>,
}
