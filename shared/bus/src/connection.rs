//! The one AMQP connection of a service, kept alive by a supervisor task.

use std::sync::Arc;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// A handle on the service's AMQP connection. Cheap to clone. The supervisor reconnects with
/// backoff whenever the connection is lost; users wait for the current connection with
/// [`Bus::connected`] and learn about replacements through [`Bus::subscribe`].
#[derive(Clone)]
pub struct Bus {
    current: watch::Receiver<Option<Arc<Connection>>>,
    /// Name shown in the management UI's connection list.
    name: Arc<str>,
    shutdown: CancellationToken,
}

impl Bus {
    /// Starts the supervisor. Returns at once; the first connection may still be pending.
    pub fn start(url: &str, name: &str, shutdown: CancellationToken) -> Bus {
        let (tx, rx) = watch::channel(None);
        let url = url.to_owned();
        let bus = Bus {
            current: rx,
            name: name.into(),
            shutdown: shutdown.clone(),
        };
        let conn_name = name.to_owned();
        tokio::spawn(supervise(url, conn_name, tx, shutdown));
        bus
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The current connection, waiting for one if there is none. `None` once shut down.
    pub async fn connected(&self) -> Option<Arc<Connection>> {
        let mut rx = self.current.clone();
        loop {
            if let Some(c) = rx.borrow_and_update().clone() {
                if c.status().connected() {
                    return Some(c);
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return None },
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// Whether a connection is up right now (for readiness).
    pub fn is_connected(&self) -> bool {
        self.current
            .borrow()
            .as_ref()
            .is_some_and(|c| c.status().connected())
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Connection>>> {
        self.current.clone()
    }
}

/// The largest AMQP frame this client asks for unless the URL says (`?frame_max=`). lapin keeps
/// 32 frames of read and of write buffer per connection, touched as traffic passes: at
/// RabbitMQ's default of 128 KiB that is 8 MiB per process; a stanza is far smaller, and a
/// larger message is sent in several frames.
const FRAME_MAX: u32 = 16 * 1024;

async fn connect(url: &str, props: ConnectionProperties) -> lapin::Result<Connection> {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(mut uri) => {
            uri.query.frame_max.get_or_insert(FRAME_MAX);
            Connection::connect_uri(uri, props).await
        }
        // lapin reports what is wrong with it.
        Err(_) => Connection::connect(url, props).await,
    }
}

async fn supervise(
    url: String,
    name: String,
    tx: watch::Sender<Option<Arc<Connection>>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let props = ConnectionProperties::default()
            .with_connection_name(name.clone().into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let attempt = tokio::select! {
            r = connect(&url, props) => r,
            _ = shutdown.cancelled() => break,
        };
        match attempt {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                let lost = Arc::new(Notify::new());
                let notify = lost.clone();
                conn.on_error(move |err| {
                    tracing::warn!(error = %err, "AMQP connection lost");
                    notify.notify_one();
                });
                let conn = Arc::new(conn);
                tracing::info!(connection = %name, "AMQP connected");
                tx.send_replace(Some(conn.clone()));
                tokio::select! {
                    _ = lost.notified() => {}
                    _ = shutdown.cancelled() => {
                        let _ = conn.close(200, "shutdown").await;
                        break;
                    }
                }
                tx.send_replace(None);
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "AMQP connect failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    tx.send_replace(None);
}
