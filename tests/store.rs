//! The store's test suite, run against both back ends: SQLite in a temp
//! file and the machine's real PostgreSQL (127.0.0.1:5432, trust auth), in a
//! database created for the test and dropped after it.

use std::time::Duration;
use switchyard::store::{Pool, RequestQuery, RequestRow, Store, StoreError};

/// The store timeout of these tests.
const TIMEOUT: Duration = Duration::from_secs(5);

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

struct Backend {
    name: &'static str,
    store: Store,
    pg_database: Option<String>,
    _dir: Option<std::path::PathBuf>,
}

async fn backends(test: &str) -> Vec<Backend> {
    let dir = std::env::temp_dir().join(format!("switchyard-store-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = Store::connect(
        &format!("sqlite://{}", dir.join("store.db").display()),
        TIMEOUT,
    )
    .await
    .expect("sqlite");
    let database = format!("switchyard_test_{}_{test}", std::process::id());
    let admin = Store::connect(PG_ADMIN, TIMEOUT)
        .await
        .expect("PostgreSQL must run on 127.0.0.1:5432 (see .ci/run)");
    let Pool::Postgres(admin_pool) = admin.pool() else {
        unreachable!()
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database}"
    )))
    .execute(admin_pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(admin_pool)
        .await
        .unwrap();
    let postgres = Store::connect(
        &format!("postgres://postgres@127.0.0.1:5432/{database}"),
        TIMEOUT,
    )
    .await
    .expect("postgres");
    vec![
        Backend {
            name: "sqlite",
            store: sqlite,
            pg_database: None,
            _dir: Some(dir),
        },
        Backend {
            name: "postgres",
            store: postgres,
            pg_database: Some(database),
            _dir: None,
        },
    ]
}

async fn drop_backends(backends: Vec<Backend>) {
    for b in backends {
        if let Some(db) = b.pg_database {
            drop(b.store);
            let admin = Store::connect(PG_ADMIN, TIMEOUT).await.unwrap();
            let Pool::Postgres(pool) = admin.pool() else {
                unreachable!()
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(pool)
            .await
            .unwrap();
        }
        if let Some(dir) = b._dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn row(at_ms: i64, route: &str, status: i32) -> RequestRow {
    RequestRow {
        at_ms,
        request_id: format!("req-{at_ms}"),
        key_name: "anonymous".into(),
        route: route.into(),
        stream: at_ms % 2 == 0,
        attempts: r#"[{"target":"p0/gpt-4o","class":"transient","cause":"status 503"}]"#.into(),
        served_target: (status < 500).then(|| "p1/gpt-4o".into()),
        status,
        outcome: if status < 500 {
            "ok".into()
        } else {
            "upstream_unavailable".into()
        },
        latency_ms: 12.5,
        first_token_ms: Some(3.25),
        prompt_tokens: Some(11),
        completion_tokens: Some(22),
        usage_estimated: at_ms % 5 == 0,
        cost_usd: Some(0.000_25),
        degraded: (at_ms % 7 == 0).then(|| "slo".into()),
        trace_id: (at_ms % 2 == 1).then(|| format!("{at_ms:032x}")),
        request_body: (at_ms % 3 == 0)
            .then(|| r#"{"model":"chat","messages":[{"content":"héllo"}]}"#.into()),
        response_body: None,
    }
}

#[tokio::test]
async fn request_log_insert_query_and_retention_on_both_back_ends() {
    let backends = backends("reqlog").await;
    for b in &backends {
        let rows: Vec<RequestRow> = (0..10)
            .map(|i| {
                row(
                    1_000 + i,
                    if i % 2 == 0 { "chat" } else { "embed" },
                    if i % 5 == 4 { 502 } else { 200 },
                )
            })
            .collect();
        b.store.insert_requests(&rows).await.unwrap();
        let all = b
            .store
            .query_requests(&RequestQuery::newest(100))
            .await
            .unwrap();
        assert_eq!(all.len(), 10, "{}", b.name);
        assert_eq!(
            all[0], rows[9],
            "{}: newest first, every field round-trips",
            b.name
        );
        let chat = b
            .store
            .query_requests(&RequestQuery {
                route: Some("chat".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(chat.len(), 5, "{}", b.name);
        let errors = b
            .store
            .query_requests(&RequestQuery {
                status_class: Some(5),
                since_ms: Some(1_005),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            errors.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            vec![1_009],
            "{}",
            b.name
        );
        let limited = b
            .store
            .query_requests(&RequestQuery::newest(3))
            .await
            .unwrap();
        assert_eq!(limited.len(), 3, "{}", b.name);
        assert_eq!(
            b.store.delete_requests_before(1_004).await.unwrap(),
            4,
            "{}",
            b.name
        );
        let left = b
            .store
            .query_requests(&RequestQuery::newest(100))
            .await
            .unwrap();
        assert_eq!(left.len(), 6, "{}", b.name);
    }
    drop_backends(backends).await;
}

/// The URL of a backend, for a second store or a raw connection to it.
fn url_of(b: &Backend) -> String {
    match (&b._dir, &b.pg_database) {
        (Some(dir), _) => format!("sqlite://{}", dir.join("store.db").display()),
        (_, Some(db)) => format!("postgres://postgres@127.0.0.1:5432/{db}"),
        _ => unreachable!(),
    }
}

/// A guard for calls that hung before store calls had a timeout: the test
/// fails instead of hanging. Not a timing assertion.
async fn within_a_minute<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the store call hung")
}

/// A lock held by another connection (PostgreSQL `LOCK TABLE`, SQLite
/// `BEGIN IMMEDIATE`) and a pool with every connection taken: each store
/// call ends with `StoreError::Timeout` instead of waiting, and the store
/// works again once the lock is released.
#[tokio::test]
async fn a_stuck_database_is_a_timeout_error_not_a_hang() {
    let backends = backends("timeout").await;
    for b in &backends {
        let short = Store::connect(&url_of(b), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(short.timeout(), Duration::from_millis(300));
        // Another client holds the request log's table (or the database's
        // write lock) in an open transaction.
        let holder = match b.store.pool() {
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("LOCK TABLE request_log IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                Holder::Postgres(tx)
            }
            Pool::Sqlite(pool) => {
                let mut conn = pool.acquire().await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                Holder::Sqlite(conn)
            }
        };
        let write = within_a_minute(short.insert_requests(&[row(1, "chat", 200)])).await;
        assert!(
            matches!(write, Err(StoreError::Timeout)),
            "{}: {write:?}",
            b.name
        );
        if let Holder::Postgres(_) = holder {
            // PostgreSQL's exclusive lock blocks readers too (SQLite's WAL does not).
            let read = within_a_minute(short.query_requests(&RequestQuery::newest(10))).await;
            assert!(
                matches!(read, Err(StoreError::Timeout)),
                "{}: {read:?}",
                b.name
            );
            assert_eq!(
                read.err().unwrap().to_string(),
                "the database did not answer in time"
            );
        }
        holder.release().await;
        short.insert_requests(&[row(2, "chat", 200)]).await.unwrap();

        // Every pooled connection taken: waiting for one is bounded too.
        let mut taken = Vec::new();
        for _ in 0..4 {
            taken.push(Taken::of(short.pool()).await);
        }
        let starved = within_a_minute(short.query_requests(&RequestQuery::newest(10))).await;
        assert!(
            matches!(starved, Err(StoreError::Timeout)),
            "{}: {starved:?}",
            b.name
        );
        drop(taken);
        assert_eq!(
            short
                .query_requests(&RequestQuery::newest(10))
                .await
                .unwrap()
                .len(),
            1,
            "{}",
            b.name
        );
    }
    drop_backends(backends).await;
}

enum Holder {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl Holder {
    async fn release(self) {
        match self {
            Holder::Postgres(tx) => tx.rollback().await.unwrap(),
            Holder::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
            }
        }
    }
}

/// A pooled connection held out of the pool.
#[allow(dead_code, reason = "held only to keep the connection out of the pool")]
enum Taken {
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl Taken {
    async fn of(pool: &Pool) -> Taken {
        match pool {
            Pool::Postgres(p) => Taken::Postgres(p.acquire().await.unwrap()),
            Pool::Sqlite(p) => Taken::Sqlite(p.acquire().await.unwrap()),
        }
    }
}

#[tokio::test]
async fn unsupported_url_is_a_clear_error() {
    let err = Store::connect("mysql://localhost/x", TIMEOUT)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("sqlite://") && err.to_string().contains("postgres://"));
}

mod common;

use common::*;

/// The gateway writes one row per request (asynchronously, batched) to
/// SQLite and to PostgreSQL, and `switchyard log query` reads them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_request_log_on_both_back_ends_and_the_cli() {
    let backends = backends("gwlog").await;
    let dir = std::env::temp_dir().join(format!("switchyard-gwlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite_url = format!("sqlite://{}", dir.join("gw.db").display());
    let pg_url = format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        backends[1].pg_database.as_ref().unwrap()
    );
    for url in [sqlite_url, pg_url] {
        let primary = sim("primary").await;
        let secondary = sim("secondary").await;
        primary.push_script([
            switchyard::sim::Fault::status(503),
            switchyard::sim::Fault::status(503),
        ]);
        let extra = format!(
            "{FAST}\n[store]\nurl = \"{url}\"\n[request_log]\nenabled = true\nretention = \"1d\"\n"
        );
        let text = config_text(&[&primary.base_url(), &secondary.base_url()], &extra)
            .replace("[routes.embed]\n", "[routes.embed]\nlog_content = true\n");
        let gw = gateway_from_text(&text).await;
        let client = client();
        chat(&client, &gw, chat_body(false)).await; // fails over
        chat(&client, &gw, chat_body(true)).await;
        let bad = call(
            &client,
            http::Method::POST,
            &format!("{}/chat/completions", gw.base_url()),
            "{\"model\":\"nope\"}",
            &[],
        )
        .await;
        assert_eq!(bad.status, http::StatusCode::NOT_FOUND);
        gw.state()
            .request_log
            .get()
            .expect("request log on")
            .flush()
            .await;

        let store = Store::connect(&url, TIMEOUT).await.unwrap();
        let rows = store
            .query_requests(&RequestQuery::newest(10))
            .await
            .unwrap();
        assert_eq!(rows.len(), 3, "{url}");
        let first = &rows[2];
        assert_eq!(first.route, "chat-default");
        assert_eq!(first.status, 200);
        assert_eq!(first.served_target.as_deref(), Some("p1/gpt-4o"));
        let failed: serde_json::Value = serde_json::from_str(&first.attempts).unwrap();
        assert_eq!(failed.as_array().unwrap().len(), 2);
        assert_eq!(failed[0]["cause"], "status 503");
        assert_eq!(first.completion_tokens, Some(8));
        assert!(first.cost_usd.unwrap() > 0.0);
        assert!(rows[1].stream && rows[1].first_token_ms.is_some());
        assert_eq!(rows[0].status, 404);
        assert_eq!(rows[0].outcome, "model_not_found");
        assert!(
            rows.iter().all(|r| r.request_body.is_none()),
            "no content unless the route enables it"
        );

        // The embeddings route logs content: request and response bodies.
        let input = serde_json::json!({"model": "embed", "input": "secret-free text"}).to_string();
        let reply = call(
            &client,
            http::Method::POST,
            &format!("{}/embeddings", gw.base_url()),
            input.clone(),
            &[],
        )
        .await;
        assert_eq!(reply.status, http::StatusCode::OK);
        gw.state().request_log.get().unwrap().flush().await;
        let logged = store
            .query_requests(&RequestQuery {
                route: Some("embed".into()),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(logged[0].request_body.as_deref(), Some(input.as_str()));
        assert_eq!(
            logged[0].response_body.as_deref(),
            Some(reply.text().as_str())
        );

        // The CLI reads the same store through the config file.
        let config_path = dir.join("gw.toml");
        std::fs::write(&config_path, &text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["log", "query", "--status", "2xx", "--json", "--config"])
            .arg(&config_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.len(),
            3,
            "{url}: two chat requests and one embeddings request succeeded"
        );
        assert!(lines.iter().all(|l| l["status"] == 200));
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop_backends(backends).await;
}

/// A request log written before `usage_estimated` and `degraded` existed
/// gets both columns on connect, and its old rows read back.
#[tokio::test]
async fn an_older_sqlite_request_log_gains_the_new_columns() {
    let dir = std::env::temp_dir().join(format!("switchyard-store-{}-older", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("old.db").display());
    let old = sqlx::sqlite::SqlitePool::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE request_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL, request_id TEXT NOT NULL, key_name TEXT NOT NULL,
        route TEXT NOT NULL, stream BOOLEAN NOT NULL, attempts TEXT NOT NULL,
        served_target TEXT, status INTEGER NOT NULL, outcome TEXT NOT NULL,
        latency_ms REAL NOT NULL, first_token_ms REAL, prompt_tokens INTEGER,
        completion_tokens INTEGER, cost_usd REAL, request_body TEXT, response_body TEXT)",
    )
    .execute(&old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO request_log (at_ms, request_id, key_name, route, stream, attempts, status, outcome, latency_ms) \
         VALUES (1, 'old', 'anonymous', 'chat', FALSE, '[]', 200, 'ok', 1.0)",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    let mut new = row(7, "chat", 200);
    new.degraded = Some("slo".into());
    store
        .insert_requests(std::slice::from_ref(&new))
        .await
        .unwrap();
    let rows = store
        .query_requests(&RequestQuery::newest(10))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], new);
    assert_eq!(rows[1].request_id, "old");
    assert_eq!(
        (rows[1].usage_estimated, rows[1].degraded.as_deref()),
        (false, None)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The status page's uptime query: requests and successes per route and
/// bucket, on both back ends, bounded by its limit.
#[tokio::test]
async fn request_buckets_sum_per_route_and_bucket_on_both_back_ends() {
    const H: i64 = 3_600_000;
    let backends = backends("buckets").await;
    for b in &backends {
        let mut rows = vec![
            row(10 * H + 1, "chat", 200),
            row(10 * H + 2, "chat", 503),
            row(10 * H + 3, "chat", 404), // a client error is no gateway failure
            row(11 * H + 4, "chat", 200),
            row(11 * H + 5, "embed", 502),
            row(9 * H, "chat", 500), // before `since`
        ];
        let mut cut = row(11 * H + 6, "chat", 200);
        cut.outcome = "cut".into();
        rows.push(cut);
        b.store.insert_requests(&rows).await.unwrap();
        let mut got = b.store.request_buckets(10 * H, H, 100).await.unwrap();
        got.sort_by(|x, y| (x.bucket, &x.route).cmp(&(y.bucket, &y.route)));
        let got: Vec<_> = got
            .iter()
            .map(|r| (r.route.as_str(), r.bucket, r.requests, r.successes))
            .collect();
        assert_eq!(
            got,
            [("chat", 10, 3, 2), ("chat", 11, 2, 1), ("embed", 11, 1, 0)],
            "{}",
            b.name
        );
        let limited = b.store.request_buckets(0, H, 2).await.unwrap();
        assert_eq!(limited.len(), 2, "{}", b.name);
    }
    drop_backends(backends).await;
}
