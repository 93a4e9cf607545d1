//! `cargo xtask`: the local stack (`up`, `down`, `status`), DC failure drills on it (`dc`,
//! `partition`, `heal`), the test run (`test`) and the compose stack's proof (`compose-check`).

mod against;
mod bench;
mod certs;
mod compose;
mod drills;
mod endpoints;
mod fuzz;
mod interop;
mod junit;
mod layout;
mod links;
mod procfs;
mod services;
mod stack;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Meerkat's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local stack: RabbitMQ per DC, PostgreSQL, services (idempotent).
    Up(stack::UpArgs),
    /// Stop everything `up` started (idempotent; data is kept).
    Down,
    /// What runs, per DC; the links between the DCs and the partitions.
    Status,
    /// DC failure drills on the running stack: `dc stop K`, `dc kill K`, `dc start K`.
    Dc {
        #[command(subcommand)]
        action: drills::DcAction,
    },
    /// Cut both directions of the links between DCs K and L (a network partition; kept by
    /// `up` and `dc start` until `heal`).
    Partition {
        #[arg(value_parser = drills::parse_dc)]
        k: u16,
        #[arg(value_parser = drills::parse_dc)]
        l: u16,
    },
    /// Restore every link cut by `partition`.
    Heal,
    /// A link proxy between two DCs' brokers; `up` runs one per ordered pair of DCs.
    #[command(hide = true)]
    LinkProxy {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        to: std::net::SocketAddr,
    },
    /// Run a fuzz target (`stream_reader`, `fragment`, ...: see fuzz/README.md) on its corpus
    /// in the repository for a while; new inputs that reach new code join the corpus.
    Fuzz {
        target: String,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Prove docker-compose.yml with a real Docker engine: images (stand-ins for the
    /// upstream ones when missing), `up`, the journey through the published ports, three
    /// gateways at DC 1, a cross-DC trace and the federation links, `down -v`.
    ComposeCheck(compose::CheckArgs),
    /// Run the workspace's tests with nextest against one shared broker and database.
    Test {
        /// Passed on to `cargo nextest run`.
        #[arg(last = true)]
        nextest_args: Vec<String>,
    },
    /// Chat load against the running local stack's DC 1 (`cargo xtask bench -- --users 500 --rate 500`);
    /// with `--inter-dc`, from DC 1 to DC 2 of a `--dcs 2` stack; with `--against`, side by
    /// side with ejabberd or Prosody.
    Bench {
        /// Compare with this server (Debian's package, installed if missing, run on loopback
        /// with a configuration of ours): the same workloads against it and Meerkat,
        /// alternately, `--runs` times; the stack is started if it is not up.
        #[arg(long, value_enum, conflicts_with_all = ["inter_dc", "replication", "failover"])]
        against: Option<against::Peer>,
        /// Rounds of `--against` (each runs every workload on both servers).
        #[arg(long, default_value_t = 3, requires = "against")]
        runs: usize,
        /// Clients of `--against`'s login workload (a closed loop of connect, STARTTLS, auth,
        /// bind, close); 0 skips it.
        #[arg(long, default_value_t = 50, requires = "against")]
        login_clients: usize,
        /// Seconds of each login workload run of `--against`.
        #[arg(long, default_value_t = 10, requires = "against")]
        login_duration: u64,
        /// Users of `--against`'s idle workload (memory per connected user, both servers
        /// started afresh each round); 0 skips it.
        #[arg(long, default_value_t = 2000, requires = "against")]
        idle_users: usize,
        /// Users of `--against`'s peak workload (the highest chat rate with p99 < 100 ms);
        /// 0 skips it.
        #[arg(long, default_value_t = 500, requires = "against")]
        peak_users: usize,
        /// The peak workload's first rate, msg/s.
        #[arg(long, default_value_t = 500.0, requires = "against")]
        peak_from: f64,
        /// Skip `--against`'s chat workload.
        #[arg(long, requires = "against")]
        no_chat: bool,
        /// Run `--against`'s workloads against the peer alone (Meerkat's column stays empty),
        /// without the local stack.
        #[arg(long, requires = "against")]
        peer_only: bool,
        /// Occupants of `--against`'s group chat workload (`meerkat-bench --muc`: one room,
        /// Meerkat's occupants half at DC 2 when the stack has two DCs); 0 skips it.
        #[arg(long, default_value_t = 0, requires = "against")]
        muc_occupants: usize,
        /// Groupchat messages a second into the room of the group chat workload.
        #[arg(long, default_value_t = 20.0, requires = "against")]
        muc_rate: f64,
        /// Seconds of the group chat workload's messages.
        #[arg(long, default_value_t = 20, requires = "against")]
        muc_duration: u64,
        /// Senders at DC 1, receivers at DC 2 (`meerkat-bench --to-addr`); needs `up --dcs 2`.
        #[arg(long)]
        inter_dc: bool,
        /// Persistent-data replication from DC 1 to DC 2 (`meerkat-bench --data-lag N
        /// --data-catch-up N`; DC 2 cut off by pausing its replicator); needs `up --dcs 2`.
        #[arg(long)]
        replication: bool,
        /// Failover figures (`meerkat-bench --failover`: DC kills and partitions); starts two
        /// DCs of its own in-process, on a RabbitMQ and PostgreSQL of its own; needs no `up`.
        #[arg(long, conflicts_with_all = ["inter_dc", "replication"])]
        failover: bool,
        /// Gateway-kill figures (`meerkat-bench --gateway-kill N`: N users' unacknowledged
        /// messages when their gateway is killed); starts a DC of its own in-process; needs no
        /// `up`.
        #[arg(long, conflicts_with_all = ["inter_dc", "replication", "failover"])]
        gateway_kill: Option<usize>,
        /// Passed on to `meerkat-bench` (see `--help` there).
        #[arg(last = true)]
        bench_args: Vec<String>,
    },
}

#[tokio::main]
async fn main() {
    meerkat_localstack::exit_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => stack::up(args).await.map(|()| 0),
        Command::Down => stack::down().await.map(|()| 0),
        Command::Status => stack::status().await.map(|()| 0),
        Command::Dc { action } => drills::dc(action).await.map(|()| 0),
        Command::Partition { k, l } => drills::partition(k, l).await.map(|()| 0),
        Command::Heal => drills::heal().await.map(|()| 0),
        Command::LinkProxy { listen, to } => links::serve(listen, to).await.map(|()| 0),
        Command::ComposeCheck(args) => compose::check(args).await,
        Command::Test { nextest_args } => test::run(nextest_args).await,
        Command::Fuzz { target, seconds } => fuzz::run(target, seconds).await,
        Command::Bench {
            against: Some(peer),
            runs,
            login_clients,
            login_duration,
            idle_users,
            peak_users,
            peak_from,
            no_chat,
            peer_only,
            muc_occupants,
            muc_rate,
            muc_duration,
            bench_args,
            ..
        } => {
            against::run(against::AgainstArgs {
                peer,
                runs,
                login_clients,
                login_duration,
                idle_users,
                peak_users,
                peak_from,
                chat_args: bench_args,
                no_chat,
                peer_only,
                muc_occupants,
                muc_rate,
                muc_duration,
            })
            .await
        }
        Command::Bench {
            failover: true,
            bench_args,
            ..
        } => bench::in_process(&["--failover".into()], bench_args).await,
        Command::Bench {
            gateway_kill: Some(users),
            bench_args,
            ..
        } => bench::in_process(&["--gateway-kill".into(), users.to_string()], bench_args).await,
        Command::Bench {
            inter_dc,
            replication,
            bench_args,
            ..
        } => bench::run(inter_dc, replication, bench_args).await,
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::exit(1);
        }
    }
}
