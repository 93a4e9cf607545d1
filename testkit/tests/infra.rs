//! The test infrastructure does what tests rely on: vhosts that take AMQP with our plugins,
//! databases that take connections, and dedicated brokers that survive stop, kill and start.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use meerkat_testkit::{dedicated_broker, infra};

async fn connect(url: &str) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, props).await
}

#[tokio::test]
async fn fresh_vhost_takes_amqp_and_consistent_hash_exchange() -> anyhow::Result<()> {
    let vhost = infra().await?.fresh_vhost().await?;
    assert!(vhost.amqp_url.ends_with(&vhost.name), "{}", vhost.amqp_url);
    let conn = connect(&vhost.amqp_url).await?;
    let ch = conn.create_channel().await?;
    // Declaring this type fails with a channel error unless the plugin is enabled.
    ch.exchange_declare(
        "partitions",
        ExchangeKind::Custom("x-consistent-hash".into()),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare("p0", QueueDeclareOptions::default(), FieldTable::default())
        .await?;
    // For this exchange type the binding key is the partition's weight.
    ch.queue_bind(
        "p0",
        "partitions",
        "1",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    conn.close(200, "done").await?;

    // Another fresh vhost is another namespace: the queue is not there.
    let other = infra().await?.fresh_vhost().await?;
    assert_ne!(other.name, vhost.name);
    let conn = connect(&other.amqp_url).await?;
    let ch = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    assert!(ch
        .queue_declare("p0", passive, FieldTable::default())
        .await
        .is_err());
    Ok(())
}

#[tokio::test]
async fn a_vhost_is_deleted_once_its_last_holder_is_done() -> anyhow::Result<()> {
    let vhost = infra().await?.fresh_vhost().await?;
    let url = format!("{}api/vhosts/{}", vhost.mgmt_url, vhost.name);
    let status = || async {
        reqwest::Client::new()
            .get(&url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let copy = vhost.clone();
    drop(vhost);
    assert_eq!(status().await?, 200, "a clone still holds it");
    drop(copy);
    assert_eq!(status().await?, 404, "deleted with its last holder");
    Ok(())
}

#[tokio::test]
async fn fresh_database_takes_sqlx_connection() -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let url = infra().await?.fresh_database().await?;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::query("CREATE TABLE t (id int PRIMARY KEY)")
        .execute(&mut conn)
        .await?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(n, 0);
    // Fresh means empty: another database does not have the table.
    let mut other = sqlx::PgConnection::connect(&infra().await?.fresh_database().await?).await?;
    assert!(sqlx::query("SELECT 1 FROM t")
        .execute(&mut other)
        .await
        .is_err());
    Ok(())
}

#[tokio::test]
async fn dedicated_broker_stops_and_starts_on_same_data() -> anyhow::Result<()> {
    let broker = dedicated_broker().await?;
    let url = broker.amqp_url();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let conn = connect(&url).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare("keep", durable, FieldTable::default())
        .await?;
    conn.close(200, "done").await?;

    broker.stop().await?;
    assert!(!broker.is_running());
    assert!(
        connect(&url).await.is_err(),
        "a stopped broker must refuse connections"
    );
    broker.start().await?;
    let conn = connect(&url).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare("keep", passive, FieldTable::default())
        .await?;

    broker.kill().await?;
    assert!(!broker.is_running());
    broker.start().await?;
    let conn = connect(&url).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare("keep", passive, FieldTable::default())
        .await?;
    Ok(())
}
