//! Starts a whole test infrastructure, uses it, and checks that stopping leaves nothing.

use meerkat_localstack::{unique_dir, LocalInfra};

#[tokio::test]
async fn infra_starts_serves_and_stops() -> anyhow::Result<()> {
    meerkat_localstack::ensure_installed().await?;
    let dir = unique_dir("meerkat-localstack-test");
    let infra = LocalInfra::start(&dir, Some(std::process::id())).await?;
    let spec = infra.spec();

    spec.rabbit.create_vhost("t-one").await?;
    let overview = spec.rabbit.overview().await?;
    assert_eq!(overview["cluster_name"], "meerkat-test");
    spec.rabbit.delete_vhost("t-one").await?;

    let url = spec.postgres.create_database("t_one").await?;
    assert!(url.ends_with("/t_one"), "{url}");
    assert!(spec.postgres.database_exists("t_one").await?);
    spec.postgres.drop_database("t_one").await?;
    assert!(!spec.postgres.database_exists("t_one").await?);

    let rabbit_pid = infra.rabbit.pid().expect("rabbit pid");
    infra.stop().await?;
    assert!(!meerkat_localstack::process::pid_alive(rabbit_pid, "beam"));
    assert!(!infra.postgres.is_running());
    assert!(!dir.exists());
    Ok(())
}
