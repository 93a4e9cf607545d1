//! `cargo xtask bench`: runs the load generator (`tools/bench`) against the running local
//! stack's DC 1 and prints its figures, plus the CPU the DC's processes used meanwhile.

use anyhow::Context as _;

use crate::endpoints::Endpoints;
use crate::layout;

/// CPU seconds used so far by the processes of the local stack (services, broker, database).
fn stack_cpu_seconds() -> f64 {
    let Ok(out) = std::process::Command::new("ps")
        .args(["-eo", "cputimes=,args="])
        .output()
    else {
        return 0.0;
    };
    let root = layout::stack_dir().display().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.contains(&root)
                || l.contains("target/release/c2s-gateway")
                || l.contains("target/release/router")
        })
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

pub async fn run(args: Vec<String>) -> anyhow::Result<i32> {
    let endpoints =
        Endpoints::read()?.context("the local stack is not up: run `cargo xtask up` first")?;
    let dc = endpoints.dcs.first().context("no DC in endpoints.json")?;
    let build =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "-p", "meerkat-bench"])
            .current_dir(layout::root())
            .status()
            .await?;
    anyhow::ensure!(build.success(), "building meerkat-bench failed");
    let cpu_before = stack_cpu_seconds();
    let started = std::time::Instant::now();
    let status = tokio::process::Command::new(layout::root().join("target/release/meerkat-bench"))
        .args(["--addr", &dc.c2s, "--domain", &endpoints.domain])
        .args(&args)
        .status()
        .await
        .context("running meerkat-bench")?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = stack_cpu_seconds() - cpu_before;
    println!(
        "DC processes (gateways, routers, RabbitMQ, PostgreSQL): {cpu:.1} CPU-s in {wall:.1} s = {:.0}% of one core",
        100.0 * cpu / wall
    );
    Ok(status.code().unwrap_or(1))
}
