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
    /// The local stack's endpoints file (`cargo xtask up` writes it): where `sessions` and `dc`
    /// find a DC's router and broker when no URL is given.
    #[arg(
        long,
        env = "MEERKAT_ENDPOINTS",
        default_value = "target/meerkat/endpoints.json",
        global = true
    )]
    pub endpoints: String,
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
    /// The sessions a DC's directory holds (local and at other DCs), grouped by DC.
    Sessions(SessionsArgs),
    /// Between DCs.
    #[command(subcommand)]
    Dc(DcCommand),
    /// A DC's RabbitMQ.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// A DC's parking queue (`meerkat.parked`): messages its services could not take (another
    /// major wire version, a kind this version does not know, an unreadable body).
    #[command(subcommand)]
    Parked(ParkedCommand),
}

#[derive(Subcommand, Debug)]
pub enum ParkedCommand {
    /// Puts the parked messages back into the queues they came from (after the upgrade that
    /// makes them readable); prints how many per queue. What the services still cannot take
    /// is parked again; a message whose queue is gone stays parked.
    Replay(ParkedArgs),
}

#[derive(Args, Debug)]
pub struct ParkedArgs {
    /// This DC (found in the endpoints file); default: the file's first DC.
    #[arg(long)]
    pub dc: Option<String>,
    /// The DC's broker, `amqp://user:password@host:port/vhost`; --dc wins over it.
    #[arg(long, env = "MEERKAT_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// Replay at most this many.
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum BrokerCommand {
    /// Defines on one DC's broker what the mesh of DCs needs (the federated exchanges, one
    /// federation upstream per other DC, the federation and backlog policies, the returned
    /// stanza exchange and queue), the same definitions `cargo xtask up` and the tests apply.
    /// Idempotent. Waits for the management API first.
    Setup(BrokerSetupArgs),
}

#[derive(Args, Debug)]
pub struct BrokerSetupArgs {
    /// This DC's id (`dc1`).
    #[arg(long, env = "MEERKAT_DC")]
    pub dc: String,
    /// RabbitMQ management API root of this DC's broker (e.g. http://dc1-rabbitmq:15672/).
    #[arg(long, env = "MEERKAT_MANAGEMENT_URL")]
    pub management_url: String,
    /// This DC's vhost on that broker.
    #[arg(long, env = "MEERKAT_VHOST", default_value = "/")]
    pub vhost: String,
    #[arg(long, env = "MEERKAT_MANAGEMENT_USER", default_value = "guest")]
    pub management_user: String,
    #[arg(
        long,
        env = "MEERKAT_MANAGEMENT_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    pub management_password: String,
    /// The other DCs and the AMQP URI this broker reaches each by, `dc2=amqp://...[,dc3=...]`,
    /// as each DC's link user (`--link-user` of that DC's setup): the same value as the
    /// routers', the session replicator's and the health service's `MEERKAT_PEERS` (they check
    /// the `x-received-from` header against it).
    #[arg(long, env = "MEERKAT_PEERS", hide_env_values = true)]
    pub peers: String,
    /// The broker user the other DCs' federation links log in as here (created with only
    /// what a link needs; their `MEERKAT_PEERS` URIs for this DC carry it).
    #[arg(long, env = "MEERKAT_LINK_USER", default_value = "meerkat-link")]
    pub link_user: String,
    #[arg(long, env = "MEERKAT_LINK_PASSWORD", hide_env_values = true)]
    pub link_password: String,
    /// How long to wait for the management API to answer.
    #[arg(long, default_value_t = 120)]
    pub wait_secs: u64,
}

#[derive(Args, Debug)]
pub struct SessionsArgs {
    /// Ask this DC's router (found in the endpoints file); default: the file's first DC.
    #[arg(long)]
    pub dc: Option<String>,
    /// Admin base URL of the router to ask (e.g. http://127.0.0.1:8051); --dc wins over it.
    #[arg(long, env = "MEERKAT_ROUTER_ADMIN_URL")]
    pub router: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum DcCommand {
    /// The other DCs as a DC's health service sees them: state (up, suspect, down), epoch,
    /// heartbeat age; its gateways and federation links. Fails when a DC is not up.
    Status(DcStatusArgs),
    /// The federation links of a DC's broker: upstream, exchange, status (and the error of a
    /// link that is not running).
    Links(LinksArgs),
    /// Persistent-data replication seen from a DC's database: per other DC, how far each has
    /// applied the other's changes and how far behind that is.
    Replication(ReplicationArgs),
}

#[derive(Args, Debug)]
pub struct DcStatusArgs {
    /// Ask this DC's health service (found in the endpoints file); default: the file's first
    /// DC.
    #[arg(long)]
    pub dc: Option<String>,
    /// Admin base URL of the health service to ask (e.g. http://127.0.0.1:8000); --dc wins
    /// over it.
    #[arg(long, env = "MEERKAT_HEALTH_ADMIN_URL")]
    pub health: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReplicationArgs {
    /// This DC's database (found in the endpoints file); default: --database-url, else the
    /// file's first DC.
    #[arg(long)]
    pub dc: Option<String>,
}

#[derive(Args, Debug)]
pub struct LinksArgs {
    /// This DC's broker (found in the endpoints file); default: the file's first DC.
    #[arg(long)]
    pub dc: Option<String>,
    /// RabbitMQ management API root of the broker (e.g. http://127.0.0.1:15672/); --dc wins
    /// over it.
    #[arg(long, env = "MEERKAT_MANAGEMENT_URL")]
    pub management_url: Option<String>,
    /// The DC's vhost on that broker (with --management-url; from the AMQP URL with --dc).
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// Management API user (with --management-url; from the endpoints file with --dc).
    #[arg(long, env = "MEERKAT_MANAGEMENT_USER", default_value = "guest")]
    pub management_user: String,
    #[arg(
        long,
        env = "MEERKAT_MANAGEMENT_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    pub management_password: String,
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
