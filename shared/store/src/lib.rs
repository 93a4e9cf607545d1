//! PostgreSQL persistence for Meerkat: accounts (SCRAM keys), rosters, pending subscription
//! requests, offline messages, block lists, the archive and personal documents (vCards,
//! private XML, last activity), with the schema migrations that create them.
//!
//! Every write is a [`Change`] applied by [`Store::write`] inside one transaction, so that
//! per-DC replication (a transactional outbox recording each change) can be added in one place.
//! Usernames are stored as given: callers nodeprep them first.

mod accounts;
mod archive;
mod blocking;
mod change;
mod muc;
mod offline;
mod pep;
mod personal;
mod replication;
mod roster;
mod subscriptions;
mod throttle;

use std::num::NonZeroU32;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

pub use archive::{
    archive_id, archive_stamp, ArchiveDefault, ArchivePage, ArchivePrefs, ArchiveQuery, Archived,
    NewArchived, Page,
};
pub use change::{Change, Outcome, RequestChange, SubSnapshot};
pub use meerkat_wire::data::{Applied, Record, Stamp};
pub use muc::{MucPut, MucTable, MucWrite};
pub use offline::OfflineMessage;
pub use pep::{LastPublished, PepChange, PepItem};
pub use personal::LastActivity;
pub use replication::{
    ApplyOutcome, FullCopy, Identity, OutboxEntry, OutboxPage, PeerState, OUTBOX_CHANNEL,
};
pub use roster::{RosterItem, Subscription};
pub use subscriptions::SubscriptionRequest;

/// Failures a caller must tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The account already exists.
    #[error("already exists")]
    Conflict,
    /// A per-account limit is reached: offline storage, the block list.
    #[error("limit reached")]
    Full,
    /// The write needs an account that does not exist.
    #[error("no such account")]
    NoSuchAccount,
    /// A stored value is out of range (written by something other than this crate).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The connections a service's pool opens at most unless configured (`database_pool`). Each
/// PostgreSQL backend costs about 2.5 MiB once warm, and a DC's services and gateway replicas
/// share the server's `max_connections` (100 by default); more connections than the database
/// server has cores buy no throughput (docs/benchmarks.md, "Memory").
pub const DEFAULT_POOL: NonZeroU32 = NonZeroU32::new(4).unwrap();

/// A pooled connection idle at least this long is pinged before it is handed out; one in use
/// more recently is handed out as it is (a query on a connection the server has closed since
/// fails, and the connection is dropped).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// A pool of at most `size` connections.
fn pool_options(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out by default: a second round trip to the
        // server for every query, which under load waits for the server's turn like the query
        // itself. A connection in steady use is known good; one idle for a while (possibly cut
        // by a server restart) is pinged first.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// Handle to the database; cheap to clone (wraps a pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// The outbox position (database epoch, seq) of this process's latest write.
    written: std::sync::Arc<parking_lot::Mutex<Option<(String, i64)>>>,
}

impl Store {
    /// [`Store::connect_with`] a pool of [`DEFAULT_POOL`] connections.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, DEFAULT_POOL).await
    }

    /// Opens a pool of at most `pool` connections and applies pending migrations. Safe when
    /// several services start at once: sqlx serialises migrators with a PostgreSQL advisory
    /// lock.
    pub async fn connect_with(url: &str, pool: NonZeroU32) -> Result<Store, StoreError> {
        // One direct connection first: fails fast and with the real cause (refused, auth...),
        // where the pool would retry until its timeout and report only that.
        PgConnection::connect(url).await?.close().await?;
        let pool = pool_options(pool.get()).connect(url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store::from_pool(pool))
    }

    /// A handle for one task that writes one batch after another (the router's archive
    /// writer): a connection of its own, opened as needed, so that it waits for none of the
    /// process's other queries, and on which PostgreSQL plans each statement once. Its
    /// statements take arrays as parameters, and for those PostgreSQL kept planning anew at
    /// most executions, which cost it three times the execution (docs/benchmarks.md). Writes
    /// through it count as this store's ([`Store::written_mark`]).
    pub fn for_one_writer(&self, url: &str) -> Result<Store, StoreError> {
        let pool = pool_options(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, "SET plan_cache_mode = force_generic_plan")
                        .await
                        .map(drop)
                })
            })
            .connect_lazy(url)?;
        Ok(Store {
            pool,
            written: self.written.clone(),
        })
    }

    /// Wraps an existing pool without migrating (the caller has done so).
    pub fn from_pool(pool: PgPool) -> Store {
        Store {
            pool,
            written: Default::default(),
        }
    }

    /// Where this process's latest write sits in the DC's outbox, as (database epoch, seq):
    /// a stanza sent after that write can carry it, so that another DC routes the stanza only
    /// once it has applied the write (a subscription request before the stanza announcing it).
    pub fn written_mark(&self) -> Option<(String, i64)> {
        self.written.lock().clone()
    }

    pub(crate) fn note_written(&self, epoch: &str, seq: i64) {
        let mut w = self.written.lock();
        if w.as_ref().is_none_or(|(e, s)| e != epoch || *s < seq) {
            *w = Some((epoch.to_owned(), seq));
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
