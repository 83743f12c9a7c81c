//! Persistent storage: SQLite by default (a file, WAL mode, no server),
//! PostgreSQL for production (`postgres://…`), one API over both. Owns the
//! schema (created and migrated at connect) and every SQL statement; knows
//! nothing about HTTP or routing. Both back ends run the same test suite.

mod keys;
mod responses;
mod uptime;

pub use keys::{KeyRow, PrefixMatch, SecretRow, UsageDelta, UsageRow};
pub use responses::ResponseRow;
pub use uptime::BucketRow;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store URL scheme (use sqlite:// or postgres://)")]
    Scheme,
    #[error("database error: {0}")]
    Db(sqlx::Error),
    /// A unique constraint refused the write (e.g. a key name already taken).
    #[error("a row with that name already exists")]
    Duplicate,
    /// The call did not finish within `[store] timeout`: no pooled
    /// connection came free, a statement ran too long or waited on a lock,
    /// or the database stopped answering.
    #[error("the database did not answer in time")]
    Timeout,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if is_timeout(&e) {
            StoreError::Timeout
        } else {
            StoreError::Db(e)
        }
    }
}

impl StoreError {
    fn from_write(e: sqlx::Error) -> StoreError {
        match e.as_database_error() {
            Some(db) if db.is_unique_violation() => StoreError::Duplicate,
            _ => StoreError::from(e),
        }
    }
}

/// Whether sqlx's error is one of the store's own time limits firing: the
/// pool's acquire timeout, PostgreSQL's `statement_timeout` (57014
/// `query_canceled`) or `lock_timeout` (55P03), SQLite's busy timeout
/// (`SQLITE_BUSY` 5, `SQLITE_LOCKED` 6 and their extended codes).
fn is_timeout(e: &sqlx::Error) -> bool {
    if matches!(e, sqlx::Error::PoolTimedOut) {
        return true;
    }
    let Some(db) = e.as_database_error() else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLite reports its (extended) result code as a number.
        return code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
    }
    matches!(code.as_ref(), "57014" | "55P03")
}

/// One client request, as the request log keeps it. No prompt or
/// completion content, no secret.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct RequestRow {
    pub at_ms: i64,
    pub request_id: String,
    pub key_name: String,
    pub route: String,
    pub stream: bool,
    /// JSON array of failed attempts: `[{"target","class","cause"}]`.
    pub attempts: String,
    pub served_target: Option<String>,
    pub status: i32,
    pub outcome: String,
    pub latency_ms: f64,
    pub first_token_ms: Option<f64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    /// The tokens are the gateway's estimate (the upstream reported none).
    pub usage_estimated: bool,
    pub cost_usd: Option<f64>,
    /// A `tier = "degraded"` target served: `slo` (the route's SLO planned
    /// it degraded-first, `degrade_on`) or `fallback` (nothing better could).
    pub degraded: Option<String>,
    /// The request's W3C trace id (32 hex digits), when OpenTelemetry
    /// export is on (`[telemetry.otlp]`).
    pub trace_id: Option<String>,
    /// Only for routes with `log_content = true`: the client's request body
    /// and (non-stream) the response body, as UTF-8 text.
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RequestQuery {
    pub since_ms: Option<i64>,
    pub route: Option<String>,
    /// 2, 4 or 5 for 2xx, 4xx, 5xx.
    pub status_class: Option<i32>,
    pub limit: i64,
}

impl RequestQuery {
    /// The newest `limit` rows, unfiltered.
    pub fn newest(limit: i64) -> Self {
        RequestQuery {
            limit,
            ..RequestQuery::default()
        }
    }
}

/// The store: a connection pool and the time limit of every call made
/// through it.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    timeout: Duration,
}

/// The back end behind a [`Store`].
#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Connections per pool: the request log writer, the spend writer, key
/// lookups and the conversation writer each rarely hold more than one.
const MAX_CONNECTIONS: u32 = 4;

const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS request_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL, request_id TEXT NOT NULL, key_name TEXT NOT NULL,
        route TEXT NOT NULL, stream BOOLEAN NOT NULL, attempts TEXT NOT NULL,
        served_target TEXT, status INTEGER NOT NULL, outcome TEXT NOT NULL,
        latency_ms REAL NOT NULL, first_token_ms REAL, prompt_tokens INTEGER,
        completion_tokens INTEGER, cost_usd REAL, request_body TEXT, response_body TEXT,
        usage_estimated BOOLEAN NOT NULL DEFAULT FALSE, degraded TEXT, trace_id TEXT)",
    "CREATE INDEX IF NOT EXISTS request_log_at ON request_log (at_ms)",
    "CREATE TABLE IF NOT EXISTS virtual_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE, service TEXT NOT NULL, allowed_routes TEXT,
        expires_at_ms INTEGER, requests_per_minute INTEGER, tokens_per_minute INTEGER,
        max_concurrent INTEGER, daily_budget_usd REAL, monthly_budget_usd REAL,
        allow_degraded BOOLEAN NOT NULL, metadata TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL, revoked_at_ms INTEGER)",
    "CREATE TABLE IF NOT EXISTS key_secrets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key_id INTEGER NOT NULL REFERENCES virtual_keys (id),
        prefix TEXT NOT NULL, hash TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER)",
    "CREATE INDEX IF NOT EXISTS key_secrets_prefix ON key_secrets (prefix)",
    "CREATE INDEX IF NOT EXISTS key_secrets_key ON key_secrets (key_id)",
    "CREATE TABLE IF NOT EXISTS key_usage (
        key_id INTEGER NOT NULL, period TEXT NOT NULL,
        cost_usd REAL NOT NULL, requests INTEGER NOT NULL,
        PRIMARY KEY (key_id, period))",
];

/// Request log columns added after the first schema: (name, definition).
const SQLITE_ADDED_COLUMNS: [(&str, &str); 3] = [
    ("usage_estimated", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("degraded", "TEXT"),
    ("trace_id", "TEXT"),
];

const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS request_log (
        id BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL, request_id TEXT NOT NULL, key_name TEXT NOT NULL,
        route TEXT NOT NULL, stream BOOLEAN NOT NULL, attempts TEXT NOT NULL,
        served_target TEXT, status INTEGER NOT NULL, outcome TEXT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL, first_token_ms DOUBLE PRECISION,
        prompt_tokens BIGINT, completion_tokens BIGINT, cost_usd DOUBLE PRECISION,
        request_body TEXT, response_body TEXT,
        usage_estimated BOOLEAN NOT NULL DEFAULT FALSE, degraded TEXT, trace_id TEXT)",
    "ALTER TABLE request_log ADD COLUMN IF NOT EXISTS usage_estimated BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE request_log ADD COLUMN IF NOT EXISTS degraded TEXT",
    "ALTER TABLE request_log ADD COLUMN IF NOT EXISTS trace_id TEXT",
    "CREATE INDEX IF NOT EXISTS request_log_at ON request_log (at_ms)",
    "CREATE TABLE IF NOT EXISTS virtual_keys (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE, service TEXT NOT NULL, allowed_routes TEXT,
        expires_at_ms BIGINT, requests_per_minute BIGINT, tokens_per_minute BIGINT,
        max_concurrent BIGINT, daily_budget_usd DOUBLE PRECISION,
        monthly_budget_usd DOUBLE PRECISION,
        allow_degraded BOOLEAN NOT NULL, metadata TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL, revoked_at_ms BIGINT)",
    "CREATE TABLE IF NOT EXISTS key_secrets (
        id BIGSERIAL PRIMARY KEY,
        key_id BIGINT NOT NULL REFERENCES virtual_keys (id),
        prefix TEXT NOT NULL, hash TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT)",
    "CREATE INDEX IF NOT EXISTS key_secrets_prefix ON key_secrets (prefix)",
    "CREATE INDEX IF NOT EXISTS key_secrets_key ON key_secrets (key_id)",
    "CREATE TABLE IF NOT EXISTS key_usage (
        key_id BIGINT NOT NULL, period TEXT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL, requests BIGINT NOT NULL,
        PRIMARY KEY (key_id, period))",
];

const INSERT: &str = "INSERT INTO request_log (at_ms, request_id, key_name, route, stream, attempts, served_target, \
     status, outcome, latency_ms, first_token_ms, prompt_tokens, completion_tokens, cost_usd, request_body, response_body, \
     usage_estimated, degraded, trace_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

const COLUMNS: &str =
    "at_ms, request_id, key_name, route, stream, attempts, served_target, status, outcome, \
     latency_ms, first_token_ms, prompt_tokens, completion_tokens, cost_usd, request_body, response_body, \
     usage_estimated, degraded, trace_id";

/// Binds a row's fields in INSERT order, for either back end.
macro_rules! bind_row {
    ($query:expr, $r:expr) => {
        $query
            .bind($r.at_ms)
            .bind(&$r.request_id)
            .bind(&$r.key_name)
            .bind(&$r.route)
            .bind($r.stream)
            .bind(&$r.attempts)
            .bind(&$r.served_target)
            .bind($r.status)
            .bind(&$r.outcome)
            .bind($r.latency_ms)
            .bind($r.first_token_ms)
            .bind($r.prompt_tokens)
            .bind($r.completion_tokens)
            .bind($r.cost_usd)
            .bind(&$r.request_body)
            .bind(&$r.response_body)
            .bind($r.usage_estimated)
            .bind(&$r.degraded)
            .bind(&$r.trace_id)
    };
}

/// `WHERE …` for a query, with `$n` placeholders in bind order.
fn where_clause(q: &RequestQuery) -> String {
    let mut conditions = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if q.since_ms.is_some() {
        conditions.push(format!("at_ms >= {}", next()));
    }
    if q.route.is_some() {
        conditions.push(format!("route = {}", next()));
    }
    if q.status_class.is_some() {
        let (lo, hi) = (next(), next());
        conditions.push(format!("status >= {lo} AND status < {hi}"));
    }
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

macro_rules! bind_query {
    ($query:expr, $q:expr) => {{
        let mut query = $query;
        if let Some(since) = $q.since_ms {
            query = query.bind(since);
        }
        if let Some(route) = &$q.route {
            query = query.bind(route.clone());
        }
        if let Some(class) = $q.status_class {
            query = query.bind(class * 100).bind(class * 100 + 100);
        }
        query.bind($q.limit.max(1))
    }};
}

impl Store {
    /// Connects and creates or migrates the schema. Every call made
    /// through the store, this one included, is bounded by `timeout`:
    /// waiting for a pooled connection, each statement (PostgreSQL's
    /// `statement_timeout`, SQLite's busy timeout) and the call as a whole,
    /// so a stuck database or a held lock becomes [`StoreError::Timeout`].
    pub async fn connect(url: &str, timeout: Duration) -> Result<Store, StoreError> {
        let pool = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(timeout);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(timeout)
                    .connect_lazy_with(options),
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let millis = timeout.as_millis().to_string();
            let options = PgConnectOptions::from_str(url)?.options([
                ("statement_timeout", millis.as_str()),
                ("lock_timeout", millis.as_str()),
            ]);
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(timeout)
                    .connect_lazy_with(options),
            )
        } else {
            return Err(StoreError::Scheme);
        };
        let store = Store { pool, timeout };
        store.migrate().await?;
        Ok(store)
    }

    /// The pool, for tests and tools that run their own SQL.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one store call within the store's timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.bounded(async {
            match &self.pool {
                Pool::Sqlite(pool) => {
                    for statement in SQLITE_SCHEMA.iter().chain(responses::SQLITE_SCHEMA) {
                        sqlx::query(*statement).execute(pool).await?;
                    }
                    // Request logs written before a column existed; SQLite has
                    // no `ADD COLUMN IF NOT EXISTS`.
                    for (column, definition) in SQLITE_ADDED_COLUMNS {
                        let has_column: Option<(i64,)> = sqlx::query_as(
                            "SELECT 1 FROM pragma_table_info('request_log') WHERE name = $1",
                        )
                        .bind(column)
                        .fetch_optional(pool)
                        .await?;
                        if has_column.is_none() {
                            // Both parts are constants of this module.
                            sqlx::query(sqlx::AssertSqlSafe(format!(
                                "ALTER TABLE request_log ADD COLUMN {column} {definition}"
                            )))
                            .execute(pool)
                            .await?;
                        }
                    }
                }
                Pool::Postgres(pool) => {
                    // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide in
                    // PostgreSQL's catalog (replicas starting together): one
                    // migration at a time per database.
                    let mut tx = pool.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock(7365921042)")
                        .execute(&mut *tx)
                        .await?;
                    for statement in POSTGRES_SCHEMA.iter().chain(responses::POSTGRES_SCHEMA) {
                        sqlx::query(*statement).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Inserts a batch in one transaction.
    pub async fn insert_requests(&self, rows: &[RequestRow]) -> Result<(), StoreError> {
        self.bounded(async {
            match &self.pool {
                Pool::Sqlite(pool) => {
                    let mut tx = pool.begin().await?;
                    for r in rows {
                        bind_row!(sqlx::query(INSERT), r).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }
                Pool::Postgres(pool) => {
                    let mut tx = pool.begin().await?;
                    for r in rows {
                        bind_row!(sqlx::query(INSERT), r).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Newest first.
    pub async fn query_requests(&self, q: &RequestQuery) -> Result<Vec<RequestRow>, StoreError> {
        self.bounded(async {
        let clause = where_clause(q);
        let limit_at = [q.since_ms.is_some(), q.route.is_some()]
            .iter()
            .filter(|b| **b)
            .count()
            + if q.status_class.is_some() { 2 } else { 0 }
            + 1;
        // Only placeholders are formatted in; every value is bound.
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM request_log {clause} ORDER BY at_ms DESC, id DESC LIMIT ${limit_at}"
        ));
        Ok(match &self.pool {
            Pool::Sqlite(pool) => {
                bind_query!(sqlx::query_as::<_, RequestRow>(sql), q)
                    .fetch_all(pool)
                    .await?
            }
            Pool::Postgres(pool) => {
                bind_query!(sqlx::query_as::<_, RequestRow>(sql), q)
                    .fetch_all(pool)
                    .await?
            }
        })
        }).await
    }

    /// Deletes rows older than `before_ms`; returns how many.
    pub async fn delete_requests_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.bounded(async {
            const SQL: &str = "DELETE FROM request_log WHERE at_ms < $1";
            Ok(match &self.pool {
                Pool::Sqlite(pool) => sqlx::query(SQL)
                    .bind(before_ms)
                    .execute(pool)
                    .await?
                    .rows_affected(),
                Pool::Postgres(pool) => sqlx::query(SQL)
                    .bind(before_ms)
                    .execute(pool)
                    .await?
                    .rows_affected(),
            })
        })
        .await
    }
}
