//! Inbound subscription requests awaiting the user's answer (RFC 6121 §3.1.3), kept so they
//! can be shown again at every login until answered.

use sqlx::PgConnection;

use meerkat_wire::data::Stamp;

use crate::{accounts, Change, Outcome, Store, StoreError};

/// A request from `contact` that the user has not answered yet.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionRequest {
    pub contact: String,
    /// The presence stanza as the user is shown it.
    pub stanza: String,
    /// When the request was first made (µs since the Unix epoch): with the two JIDs, it
    /// names the request, so showing it twice to one session can be recognised.
    pub since: i64,
    /// The DC that wrote it last (the requester's, where the request was routed).
    pub dc: String,
}

impl Store {
    /// Records a pending request; a repeat from the same contact replaces the stored stanza
    /// but keeps the request's `since` (returned), so one request keeps one identity until
    /// it is answered.
    pub async fn add_subscription_request(
        &self,
        username: &str,
        contact: &str,
        stanza: &str,
    ) -> Result<i64, StoreError> {
        let change = Change::AddSubscriptionRequest {
            username: username.to_owned(),
            contact: contact.to_owned(),
            stanza: stanza.to_owned(),
        };
        match self.write(&change).await? {
            Outcome::Since(since) => Ok(since),
            other => unreachable!("a subscription request write returned {other:?}"),
        }
    }

    /// Forgets a pending request; false if there was none.
    pub async fn remove_subscription_request(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<bool, StoreError> {
        let change = Change::RemoveSubscriptionRequest {
            username: username.to_owned(),
            contact: contact.to_owned(),
        };
        Ok(self.write(&change).await? == Outcome::Existed(true))
    }

    /// Pending requests, oldest first.
    pub async fn subscription_requests(
        &self,
        username: &str,
    ) -> Result<Vec<SubscriptionRequest>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT contact, stanza, (extract(epoch FROM created_at) * 1000000)::bigint AS since, \
             hlc_dc AS dc FROM subscription_requests WHERE username = $1 \
             ORDER BY created_at, contact",
        )
        .bind(username)
        .fetch_all(self.pool())
        .await?)
    }
}

pub(crate) async fn add(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
    stanza: &str,
    stamp: &Stamp,
) -> Result<i64, StoreError> {
    if !accounts::lock(conn, username).await? {
        return Err(StoreError::NoSuchAccount);
    }
    Ok(sqlx::query_scalar(
        "INSERT INTO subscription_requests (username, contact, stanza, hlc, hlc_dc) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (username, contact) DO UPDATE SET stanza = EXCLUDED.stanza, \
         hlc = EXCLUDED.hlc, hlc_dc = EXCLUDED.hlc_dc \
         RETURNING (extract(epoch FROM created_at) * 1000000)::bigint",
    )
    .bind(username)
    .bind(contact)
    .bind(stanza)
    .bind(stamp.hlc)
    .bind(&stamp.dc)
    .fetch_one(conn)
    .await?)
}

pub(crate) async fn remove(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
) -> Result<bool, StoreError> {
    let deleted =
        sqlx::query("DELETE FROM subscription_requests WHERE username = $1 AND contact = $2")
            .bind(username)
            .bind(contact)
            .execute(conn)
            .await?;
    Ok(deleted.rows_affected() > 0)
}

/// The state a subscription transition reads of `username`'s side for `contact`.
pub(crate) async fn snapshot(
    conn: &mut PgConnection,
    username: &str,
    contact: &str,
) -> Result<crate::change::SubSnapshot, StoreError> {
    let item: Option<(String, bool, bool)> = sqlx::query_as(
        "SELECT subscription, ask_out, approved FROM roster_items \
         WHERE username = $1 AND contact = $2",
    )
    .bind(username)
    .bind(contact)
    .fetch_optional(&mut *conn)
    .await?;
    let item = match item {
        Some((sub, ask, approved)) => Some((
            crate::Subscription::parse(&sub)
                .ok_or_else(|| StoreError::Corrupt(format!("subscription {sub:?}")))?,
            ask,
            approved,
        )),
        None => None,
    };
    let pending: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM subscription_requests WHERE username = $1 AND contact = $2)",
    )
    .bind(username)
    .bind(contact)
    .fetch_one(conn)
    .await?;
    Ok(crate::change::SubSnapshot { item, pending })
}

impl Store {
    /// The state of `username`'s side for `contact` a subscription transition starts from.
    pub async fn subscription_snapshot(
        &self,
        username: &str,
        contact: &str,
    ) -> Result<crate::change::SubSnapshot, StoreError> {
        let mut conn = self.pool().acquire().await?;
        snapshot(&mut conn, username, contact).await
    }

    /// Applies one side of a subscription transition if that side is still as `expected`;
    /// `None` when it changed meanwhile (nothing written: read again), else the new roster
    /// version (if the item was put) and the stored request's `since`.
    pub async fn subscription_step(
        &self,
        username: &str,
        contact: &str,
        expected: crate::change::SubSnapshot,
        item: Option<crate::RosterItem>,
        request: crate::change::RequestChange,
    ) -> Result<Option<(Option<i64>, Option<i64>)>, StoreError> {
        let change = Change::SubscriptionStep {
            username: username.to_owned(),
            contact: contact.to_owned(),
            expected,
            item,
            request,
        };
        match self.write(&change).await? {
            Outcome::Step {
                applied: true,
                version,
                since,
            } => Ok(Some((version, since))),
            Outcome::Step { applied: false, .. } => Ok(None),
            other => unreachable!("subscription_step produced {other:?}"),
        }
    }
}
