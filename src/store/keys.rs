//! The virtual key tables: key identities (`virtual_keys`), their secrets
//! (`key_secrets`: visible prefix and SHA-256 only, never the secret) and
//! spend per key and period (`key_usage`). Plain rows in, plain rows out;
//! what they mean is `crate::keys`'s business.

use super::{Pool, Store, StoreError};

/// One key identity. `id` is assigned by the store on insert.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub service: String,
    /// JSON array of route names; `None` allows every route.
    pub allowed_routes: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub requests_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
    pub max_concurrent: Option<i64>,
    pub daily_budget_usd: Option<f64>,
    pub monthly_budget_usd: Option<f64>,
    pub allow_degraded: bool,
    /// JSON object.
    pub metadata: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// One secret of a key: what identifies it, never what it is.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SecretRow {
    pub key_id: i64,
    /// The visible start of the secret, used for lookup and display.
    pub prefix: String,
    /// Hex SHA-256 of the whole secret.
    pub hash: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// A secret whose prefix matched, with the identity it belongs to.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PrefixMatch {
    #[sqlx(flatten)]
    pub key: KeyRow,
    pub hash: String,
    pub secret_expires_at_ms: Option<i64>,
}

/// Spend to add to a key's period total.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageDelta {
    pub key_id: i64,
    /// `d:YYYY-MM-DD` or `m:YYYY-MM` (UTC).
    pub period: String,
    pub cost_usd: f64,
    pub requests: i64,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UsageRow {
    pub key_id: i64,
    pub period: String,
    pub cost_usd: f64,
    pub requests: i64,
}

const KEY_COLUMNS: &str = "k.id, k.name, k.service, k.allowed_routes, k.expires_at_ms, \
     k.requests_per_minute, k.tokens_per_minute, k.max_concurrent, k.daily_budget_usd, \
     k.monthly_budget_usd, k.allow_degraded, k.metadata, k.created_at_ms, k.revoked_at_ms";

const INSERT_KEY: &str = "INSERT INTO virtual_keys (name, service, allowed_routes, expires_at_ms, \
     requests_per_minute, tokens_per_minute, max_concurrent, daily_budget_usd, monthly_budget_usd, \
     allow_degraded, metadata, created_at_ms, revoked_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id";

const INSERT_SECRET: &str =
    "INSERT INTO key_secrets (key_id, prefix, hash, created_at_ms, expires_at_ms) \
     VALUES ($1, $2, $3, $4, $5)";

/// Cuts the other secrets of a key short, never lengthens them.
const EXPIRE_OTHER_SECRETS: &str = "UPDATE key_secrets SET expires_at_ms = $2 \
     WHERE key_id = $1 AND (expires_at_ms IS NULL OR expires_at_ms > $2)";

const UPDATE_LIMITS: &str =
    "UPDATE virtual_keys SET allowed_routes = $2, requests_per_minute = $3, \
     tokens_per_minute = $4, max_concurrent = $5, daily_budget_usd = $6, monthly_budget_usd = $7, \
     allow_degraded = $8 WHERE id = $1";

/// `+=` in both dialects: SQLite (3.24+) and PostgreSQL share this upsert.
const ADD_USAGE: &str =
    "INSERT INTO key_usage (key_id, period, cost_usd, requests) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (key_id, period) DO UPDATE SET cost_usd = key_usage.cost_usd + excluded.cost_usd, \
     requests = key_usage.requests + excluded.requests";

/// Runs `$body` with `$pool` bound to whichever back end this is; the SQL
/// is the same for both.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

impl Store {
    /// Inserts a key identity and its first secret in one transaction;
    /// returns the new id. A taken name is [`StoreError::Duplicate`].
    pub async fn insert_key(&self, key: &KeyRow, secret: &SecretRow) -> Result<i64, StoreError> {
        self.bounded(async {
            with_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let id: i64 = sqlx::query_scalar(INSERT_KEY)
                    .bind(&key.name)
                    .bind(&key.service)
                    .bind(&key.allowed_routes)
                    .bind(key.expires_at_ms)
                    .bind(key.requests_per_minute)
                    .bind(key.tokens_per_minute)
                    .bind(key.max_concurrent)
                    .bind(key.daily_budget_usd)
                    .bind(key.monthly_budget_usd)
                    .bind(key.allow_degraded)
                    .bind(&key.metadata)
                    .bind(key.created_at_ms)
                    .bind(key.revoked_at_ms)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::from_write)?;
                sqlx::query(INSERT_SECRET)
                    .bind(id)
                    .bind(&secret.prefix)
                    .bind(&secret.hash)
                    .bind(secret.created_at_ms)
                    .bind(secret.expires_at_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(id)
            })
        })
        .await
    }

    pub async fn key_by_name(&self, name: &str) -> Result<Option<KeyRow>, StoreError> {
        self.bounded(async {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM virtual_keys k WHERE k.name = $1"
            ));
            with_pool!(self, pool => Ok(sqlx::query_as::<_, KeyRow>(sql)
            .bind(name)
            .fetch_optional(pool)
            .await?))
        })
        .await
    }

    /// Every key identity, revoked ones included, by name.
    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        self.bounded(async {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM virtual_keys k ORDER BY k.name"
            ));
            with_pool!(self, pool => Ok(sqlx::query_as::<_, KeyRow>(sql).fetch_all(pool).await?))
        })
        .await
    }

    /// The secrets of one key, or of every key (`None`), oldest first.
    pub async fn key_secrets(&self, key_id: Option<i64>) -> Result<Vec<SecretRow>, StoreError> {
        self.bounded(async {
            const ONE: &str =
                "SELECT key_id, prefix, hash, created_at_ms, expires_at_ms FROM key_secrets \
             WHERE key_id = $1 ORDER BY created_at_ms, id";
            const ALL: &str =
                "SELECT key_id, prefix, hash, created_at_ms, expires_at_ms FROM key_secrets \
             ORDER BY key_id, created_at_ms, id";
            with_pool!(self, pool => Ok(match key_id {
                Some(id) => sqlx::query_as::<_, SecretRow>(ONE).bind(id).fetch_all(pool).await?,
                None => sqlx::query_as::<_, SecretRow>(ALL).fetch_all(pool).await?,
            }))
        })
        .await
    }

    /// The secrets whose visible prefix is `prefix`, each with its key.
    pub async fn secrets_by_prefix(&self, prefix: &str) -> Result<Vec<PrefixMatch>, StoreError> {
        self.bounded(async {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS}, s.hash, s.expires_at_ms AS secret_expires_at_ms \
             FROM key_secrets s JOIN virtual_keys k ON k.id = s.key_id WHERE s.prefix = $1"
            ));
            with_pool!(self, pool => Ok(sqlx::query_as::<_, PrefixMatch>(sql)
            .bind(prefix)
            .fetch_all(pool)
            .await?))
        })
        .await
    }

    /// Adds a secret to a key and, in the same transaction, makes every
    /// other secret of that key expire at `others_expire_at_ms` at the latest.
    pub async fn add_key_secret(
        &self,
        secret: &SecretRow,
        others_expire_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            with_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                sqlx::query(EXPIRE_OTHER_SECRETS)
                    .bind(secret.key_id)
                    .bind(others_expire_at_ms)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(INSERT_SECRET)
                    .bind(secret.key_id)
                    .bind(&secret.prefix)
                    .bind(&secret.hash)
                    .bind(secret.created_at_ms)
                    .bind(secret.expires_at_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    /// Marks a key revoked at `at_ms` unless it already is.
    pub async fn revoke_key(&self, key_id: i64, at_ms: i64) -> Result<(), StoreError> {
        self.bounded(async {
            const SQL: &str =
            "UPDATE virtual_keys SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL";
            with_pool!(self, pool => {
                sqlx::query(SQL).bind(key_id).bind(at_ms).execute(pool).await?;
                Ok(())
            })
        })
        .await
    }

    /// Writes a key's routes, limits, budgets and `allow_degraded` (by id).
    pub async fn update_key_limits(&self, key: &KeyRow) -> Result<(), StoreError> {
        self.bounded(async {
            with_pool!(self, pool => {
                sqlx::query(UPDATE_LIMITS)
                    .bind(key.id)
                    .bind(&key.allowed_routes)
                    .bind(key.requests_per_minute)
                    .bind(key.tokens_per_minute)
                    .bind(key.max_concurrent)
                    .bind(key.daily_budget_usd)
                    .bind(key.monthly_budget_usd)
                    .bind(key.allow_degraded)
                    .execute(pool)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// Adds each delta to its (key, period) total, in one transaction.
    pub async fn add_key_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        self.bounded(async {
            with_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                for d in deltas {
                    sqlx::query(ADD_USAGE)
                        .bind(d.key_id)
                        .bind(&d.period)
                        .bind(d.cost_usd)
                        .bind(d.requests)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    /// Totals for the given day and month periods, of one key or of all.
    pub async fn key_usage(
        &self,
        key_id: Option<i64>,
        day: &str,
        month: &str,
    ) -> Result<Vec<UsageRow>, StoreError> {
        self.bounded(async {
            const ONE: &str = "SELECT key_id, period, cost_usd, requests FROM key_usage \
             WHERE period IN ($1, $2) AND key_id = $3";
            const ALL: &str = "SELECT key_id, period, cost_usd, requests FROM key_usage \
             WHERE period IN ($1, $2)";
            with_pool!(self, pool => Ok(match key_id {
                Some(id) => sqlx::query_as::<_, UsageRow>(ONE)
                    .bind(day)
                    .bind(month)
                    .bind(id)
                    .fetch_all(pool)
                    .await?,
                None => sqlx::query_as::<_, UsageRow>(ALL)
                    .bind(day)
                    .bind(month)
                    .fetch_all(pool)
                    .await?,
            }))
        })
        .await
    }
}
