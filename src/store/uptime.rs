//! The request log summed per route and time bucket, for the status page's
//! uptime bars: one bounded `GROUP BY` over an `at_ms` range (the
//! `request_log_at` index), never rows.

use super::{Pool, Store, StoreError};

/// Requests of one route in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct BucketRow {
    pub route: String,
    /// `at_ms / bucket_ms`: the bucket's start is `bucket * bucket_ms`.
    pub bucket: i64,
    pub requests: i64,
    /// Not failed for the client: status below 500 and not a cut stream,
    /// as the live statistics count them.
    pub successes: i64,
}

const SQL: &str = "SELECT route, at_ms / $1 AS bucket, COUNT(*) AS requests, \
     SUM(CASE WHEN status < 500 AND outcome <> 'cut' THEN 1 ELSE 0 END) AS successes \
     FROM request_log WHERE at_ms >= $2 GROUP BY 1, 2 LIMIT $3";

impl Store {
    /// Requests and successes per route and `bucket_ms` bucket since
    /// `since_ms`, at most `limit` rows (in no particular order).
    pub async fn request_buckets(
        &self,
        since_ms: i64,
        bucket_ms: i64,
        limit: i64,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        self.bounded(async {
            Ok(match &self.pool {
                Pool::Sqlite(pool) => {
                    sqlx::query_as::<_, BucketRow>(SQL)
                        .bind(bucket_ms)
                        .bind(since_ms)
                        .bind(limit.max(1))
                        .fetch_all(pool)
                        .await?
                }
                Pool::Postgres(pool) => {
                    sqlx::query_as::<_, BucketRow>(SQL)
                        .bind(bucket_ms)
                        .bind(since_ms)
                        .bind(limit.max(1))
                        .fetch_all(pool)
                        .await?
                }
            })
        })
        .await
    }
}
