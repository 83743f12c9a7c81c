//! Stored Responses API answers (`responses`): what the gateway served for
//! `/v1/responses`, so `previous_response_id` survives failover to another
//! provider and `GET /v1/responses/{id}` works whoever served it. Rows are
//! scoped to an owner (the virtual key's id, or empty with `auth = "none"`)
//! and deleted after their expiry. Plain rows in, plain rows out.

use super::{Pool, Store, StoreError};

/// One stored response.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ResponseRow {
    pub id: String,
    /// The virtual key id that created it, as text; empty without auth.
    pub owner: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The provider that served it, and whether that upstream keeps it too
    /// (served natively with `store` on): then a follow-up sent to the same
    /// provider can pass `previous_response_id` through.
    pub provider: String,
    pub upstream_holds: bool,
    /// JSON array: the request's own input items.
    pub input_items: String,
    /// JSON array: the whole conversation up to and including this answer
    /// (earlier turns, this input, this output), ready to replay.
    pub conversation: String,
    /// The response object as the client received it.
    pub response: String,
}

pub(super) const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS responses (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL,
        provider TEXT NOT NULL, upstream_holds BOOLEAN NOT NULL,
        input_items TEXT NOT NULL, conversation TEXT NOT NULL, response TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at_ms)",
];

pub(super) const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS responses (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL,
        provider TEXT NOT NULL, upstream_holds BOOLEAN NOT NULL,
        input_items TEXT NOT NULL, conversation TEXT NOT NULL, response TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires_at_ms)",
];

const COLUMNS: &str = "id, owner, created_at_ms, expires_at_ms, provider, upstream_holds, \
     input_items, conversation, response";

/// Runs `$query` on whichever back end `$store` is, with the same binds.
macro_rules! on_store {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

impl Store {
    /// Inserts or replaces (a retried write must not fail on its own row).
    pub async fn put_response(&self, row: &ResponseRow) -> Result<(), StoreError> {
        self.bounded(async {
            const SQL: &str =
                "INSERT INTO responses (id, owner, created_at_ms, expires_at_ms, provider, \
             upstream_holds, input_items, conversation, response) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, \
             created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms, \
             provider = excluded.provider, upstream_holds = excluded.upstream_holds, \
             input_items = excluded.input_items, conversation = excluded.conversation, \
             response = excluded.response";
            on_store!(self, |pool| {
                sqlx::query(SQL)
                    .bind(&row.id)
                    .bind(&row.owner)
                    .bind(row.created_at_ms)
                    .bind(row.expires_at_ms)
                    .bind(&row.provider)
                    .bind(row.upstream_holds)
                    .bind(&row.input_items)
                    .bind(&row.conversation)
                    .bind(&row.response)
                    .execute(pool)
                    .await?;
            });
            Ok(())
        })
        .await
    }

    /// The response `id` of `owner`, unless it expired before `now_ms`.
    pub async fn get_response(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<Option<ResponseRow>, StoreError> {
        self.bounded(async {
            let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM responses WHERE id = $1 AND owner = $2 AND expires_at_ms > $3"
        ));
            Ok(on_store!(self, |pool| {
                sqlx::query_as::<_, ResponseRow>(sql)
                    .bind(id)
                    .bind(owner)
                    .bind(now_ms)
                    .fetch_optional(pool)
                    .await?
            }))
        })
        .await
    }

    /// Deletes the response `id` of `owner`; whether there was one.
    pub async fn delete_response(&self, id: &str, owner: &str) -> Result<bool, StoreError> {
        self.bounded(async {
            const SQL: &str = "DELETE FROM responses WHERE id = $1 AND owner = $2";
            Ok(on_store!(self, |pool| {
                sqlx::query(SQL)
                    .bind(id)
                    .bind(owner)
                    .execute(pool)
                    .await?
                    .rows_affected()
                    > 0
            }))
        })
        .await
    }

    /// Deletes responses past their expiry; returns how many.
    pub async fn delete_expired_responses(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.bounded(async {
            const SQL: &str = "DELETE FROM responses WHERE expires_at_ms <= $1";
            Ok(on_store!(self, |pool| {
                sqlx::query(SQL)
                    .bind(now_ms)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }))
        })
        .await
    }
}
