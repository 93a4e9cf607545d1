//! Inbound subscription requests awaiting the user's answer (RFC 6121 §3.1.3), kept so they
//! can be shown again at every login until answered.

use sqlx::PgConnection;

use crate::{accounts, Change, Outcome, Store, StoreError};

impl Store {
    /// Records a pending request; a repeat from the same contact replaces the stored stanza.
    pub async fn add_subscription_request(
        &self,
        username: &str,
        contact: &str,
        stanza: &str,
    ) -> Result<(), StoreError> {
        let change = Change::AddSubscriptionRequest {
            username: username.to_owned(),
            contact: contact.to_owned(),
            stanza: stanza.to_owned(),
        };
        self.write(&change).await.map(|_| ())
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

    /// Pending requests as (contact, stanza), oldest first.
    pub async fn subscription_requests(
        &self,
        username: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT contact, stanza FROM subscription_requests WHERE username = $1 ORDER BY created_at, contact",
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
) -> Result<(), StoreError> {
    if !accounts::lock(conn, username).await? {
        return Err(StoreError::NoSuchAccount);
    }
    sqlx::query(
        "INSERT INTO subscription_requests (username, contact, stanza) VALUES ($1, $2, $3) \
         ON CONFLICT (username, contact) DO UPDATE SET stanza = EXCLUDED.stanza",
    )
    .bind(username)
    .bind(contact)
    .bind(stanza)
    .execute(conn)
    .await?;
    Ok(())
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
