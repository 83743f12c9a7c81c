//! Virtual keys end to end, each test against both store back ends (a temp
//! SQLite file and a throwaway database on the machine's real PostgreSQL at
//! 127.0.0.1:5432): issuing and checking secrets, refusals, rotation,
//! revocation and the cache TTL, budgets across a restart, the admin HTTP
//! API, the CLI through the built binary, and that no secret is ever
//! stored or listed. Time moves only by a manual clock, never by sleeping.

mod common;

use common::{call, client, drop_postgres, fresh_postgres, Reply};
use http::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use switchyard::config::{AdminKey, Config};
use switchyard::keys::{
    AuthError, BudgetPeriod, Clock, Expiry, KeyBudget, KeyError, KeyLimits, KeySettings, KeyStatus,
    Keys, LimitsUpdate, NewKey, Update,
};
use switchyard::store::{Pool, Store};

/// The store timeout of these tests.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

struct Backend {
    name: &'static str,
    store: Store,
    pg_url: Option<String>,
    dir: Option<std::path::PathBuf>,
}

async fn backends(test: &str) -> Vec<Backend> {
    let dir = std::env::temp_dir().join(format!("switchyard-keys-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = Store::connect(
        &format!("sqlite://{}", dir.join("store.db").display()),
        TIMEOUT,
    )
    .await
    .expect("sqlite");
    let url = fresh_postgres(&format!("switchyard_keys_{test}")).await;
    let postgres = Store::connect(&url, TIMEOUT).await.expect("postgres");
    vec![
        Backend {
            name: "sqlite",
            store: sqlite,
            pg_url: None,
            dir: Some(dir),
        },
        Backend {
            name: "postgres",
            store: postgres,
            pg_url: Some(url),
            dir: None,
        },
    ]
}

async fn drop_backends(backends: Vec<Backend>) {
    for b in backends {
        drop(b.store);
        if let Some(url) = b.pg_url {
            drop_postgres(&url).await;
        }
        if let Some(dir) = b.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Everything the store holds for keys, as text: PostgreSQL rows as JSON;
/// the SQLite database and WAL files byte for byte.
async fn dump(b: &Backend) -> String {
    match (b.store.pool(), &b.dir) {
        (Pool::Sqlite(_), Some(dir)) => {
            // Rows may still sit in the WAL: read both files as they are.
            let mut text = String::new();
            for file in ["store.db", "store.db-wal"] {
                if let Ok(bytes) = std::fs::read(dir.join(file)) {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            text
        }
        (Pool::Postgres(pool), _) => {
            let mut text = String::new();
            for table in ["virtual_keys", "key_secrets", "key_usage"] {
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT row_to_json(t)::text FROM {table} t"
                )))
                .fetch_all(pool)
                .await
                .unwrap();
                text.push_str(&rows.join("\n"));
            }
            text
        }
        _ => unreachable!(),
    }
}

/// 2026-11-25T10:00:00Z.
fn t0() -> i64 {
    switchyard::keys::parse_date("2026-11-25T10:00:00Z").unwrap()
}

/// Spend is written only by explicit `flush` calls, so what each node has
/// seen is decided by the test, not by a timer.
fn settings(clock: &Clock) -> KeySettings {
    KeySettings {
        clock: clock.clone(),
        flush_every: Duration::from_secs(3_600),
        ..KeySettings::default()
    }
}

async fn open(b: &Backend, clock: &Clock) -> Keys {
    Keys::open(b.store.clone(), settings(clock)).await.unwrap()
}

fn invalid_field(result: Result<impl std::fmt::Debug, KeyError>) -> &'static str {
    match result {
        Err(KeyError::Invalid { field, .. }) => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_and_authenticate_on_both_back_ends() {
    let backends = backends("create").await;
    for b in &backends {
        let clock = Clock::manual(t0());
        let keys = open(b, &clock).await;
        let mut new = NewKey::new("svc-a", "billing");
        new.allowed_routes = Some(vec!["chat-default".into()]);
        new.limits = KeyLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: Some(10_000),
            max_concurrent: Some(2),
        };
        new.budget = KeyBudget {
            daily_usd: Some(5.0),
            monthly_usd: None,
        };
        new.allow_degraded = false;
        new.metadata = serde_json::json!({"team": "payments"})
            .as_object()
            .unwrap()
            .clone();
        let issued = keys.create(new.clone()).await.unwrap();
        let secret = issued.secret.expose().to_owned();
        assert!(
            secret.starts_with("sy-") && secret.len() == 46,
            "{}",
            b.name
        );
        assert_eq!(issued.key.secrets.len(), 1);
        assert_eq!(issued.key.secrets[0].prefix, secret[..11]);
        assert!(
            !format!("{:?}", issued.secret).contains(&secret[11..]),
            "Debug hides the secret"
        );

        let info = keys.authenticate(&secret).await.unwrap();
        assert_eq!(info.name, "svc-a");
        assert_eq!(info.service, "billing");
        assert_eq!(info.limits, new.limits);
        assert_eq!(info.budget, new.budget);
        assert!(!info.allow_degraded);
        assert_eq!(info.metadata["team"], "payments");
        assert!(info.allows_route("chat-default"));
        assert!(!info.allows_route("embed"));
        let again = keys.authenticate(&format!(" {secret} ")).await.unwrap();
        assert!(
            Arc::ptr_eq(&info, &again),
            "{}: served from the cache",
            b.name
        );

        // Another process over the same store (empty cache) agrees.
        let other = open(b, &clock).await;
        assert_eq!(other.authenticate(&secret).await.unwrap().id, info.id);

        let open_key = keys.create(NewKey::new("svc-b", "search")).await.unwrap();
        let info_b = keys.authenticate(open_key.secret.expose()).await.unwrap();
        assert!(info_b.allows_route("anything") && info_b.allow_degraded);

        assert!(matches!(
            keys.create(NewKey::new("svc-a", "other")).await,
            Err(KeyError::Exists(name)) if name == "svc-a"
        ));
        let shown = keys.show("svc-a").await.unwrap();
        assert_eq!(shown.status, KeyStatus::Active);
        assert_eq!(shown.routes, Some(vec!["chat-default".to_owned()]));
        assert_eq!(shown.requests_per_minute, Some(60));
        assert_eq!(shown.created_at, "2026-11-25T10:00:00Z");
        let names: Vec<String> = keys
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.name)
            .collect();
        assert_eq!(names, ["svc-a", "svc-b"]);
        assert!(matches!(
            keys.show("nope").await,
            Err(KeyError::NotFound(_))
        ));

        // Every input problem names its field.
        let bad = |f: fn(&mut NewKey)| {
            let mut n = NewKey::new("fine", "svc");
            f(&mut n);
            n
        };
        assert_eq!(
            invalid_field(keys.create(bad(|n| n.name = "a b".into())).await),
            "name"
        );
        assert_eq!(
            invalid_field(keys.create(bad(|n| n.name = String::new())).await),
            "name"
        );
        assert_eq!(
            invalid_field(keys.create(bad(|n| n.service = " ".into())).await),
            "service"
        );
        assert_eq!(
            invalid_field(keys.create(bad(|n| n.allowed_routes = Some(vec![]))).await),
            "routes"
        );
        assert_eq!(
            invalid_field(
                keys.create(bad(|n| n.limits.requests_per_minute = Some(0)))
                    .await
            ),
            "requests_per_minute"
        );
        assert_eq!(
            invalid_field(keys.create(bad(|n| n.budget.daily_usd = Some(-1.0))).await),
            "daily_budget_usd"
        );
        assert_eq!(
            invalid_field(
                keys.create(bad(|n| n.budget.monthly_usd = Some(f64::NAN)))
                    .await
            ),
            "monthly_budget_usd"
        );
        assert_eq!(
            invalid_field(keys.create(bad(|n| n.expires = Some(Expiry::At(0)))).await),
            "expires_at"
        );
        assert_eq!(keys.list().await.unwrap().len(), 2, "nothing half-created");

        // The store holds the hash and the prefix, never the secret.
        keys.rotate("svc-a", Duration::from_secs(60)).await.unwrap();
        let stored = dump(b).await;
        let hash = {
            use sha2::Digest;
            let digest: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert!(stored.contains(&hash), "{}: the scan sees the rows", b.name);
        assert!(stored.contains(&secret[..11]));
        for s in [&secret, open_key.secret.expose()] {
            assert!(!stored.contains(&s[11..]), "{}: secret stored", b.name);
        }
    }
    drop_backends(backends).await;
}

#[tokio::test]
async fn refused_keys_say_why() {
    let backends = backends("refused").await;
    for b in &backends {
        let clock = Clock::manual(t0());
        let keys = open(b, &clock).await;
        for missing in ["", "   "] {
            assert!(matches!(
                keys.authenticate(missing).await,
                Err(AuthError::Missing)
            ));
        }
        let real = keys.create(NewKey::new("real", "svc")).await.unwrap();
        let real = real.secret.expose();
        let well_formed_unknown = format!("sy-{}", "A".repeat(43));
        let mut flipped = real.to_owned();
        flipped.replace_range(45.., if real.ends_with('x') { "y" } else { "x" });
        for garbage in [
            "Bearer",
            "sk-proj-123",
            "sy-",
            "sy-short",
            &format!("{real}x"),
            &real[..45],
            &format!("sy-{}é", &real[5..]),
            "\u{0}\u{1}sy-",
            &well_formed_unknown,
            &flipped,
        ] {
            let e = keys.authenticate(garbage).await.unwrap_err();
            assert!(matches!(e, AuthError::Unknown), "{garbage:?}: {e:?}");
            assert!(!e.to_string().contains(garbage.trim()) || garbage.trim().is_empty());
        }
        assert_eq!(
            keys.authenticate(&flipped).await.unwrap_err().to_string(),
            "the API key is not valid"
        );

        // Expiry of the key identity.
        let mut expiring = NewKey::new("temp", "svc");
        expiring.expires = Some(Expiry::After(Duration::from_secs(3_600)));
        let temp = keys.create(expiring).await.unwrap();
        assert!(keys.authenticate(temp.secret.expose()).await.is_ok());
        clock.advance(Duration::from_secs(3_600));
        let e = keys.authenticate(temp.secret.expose()).await.unwrap_err();
        assert!(matches!(e, AuthError::Expired), "{}: {e:?}", b.name);
        assert_eq!(e.to_string(), "the API key has expired");
        assert_eq!(keys.show("temp").await.unwrap().status, KeyStatus::Expired);

        // Revocation through this node: at once.
        let revoked = keys.create(NewKey::new("gone", "svc")).await.unwrap();
        assert!(keys.authenticate(revoked.secret.expose()).await.is_ok());
        let view = keys.revoke("gone").await.unwrap();
        assert_eq!(view.status, KeyStatus::Revoked);
        assert!(view.secrets.iter().all(|s| !s.active));
        let e = keys
            .authenticate(revoked.secret.expose())
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::Revoked), "{}: {e:?}", b.name);
        assert_eq!(e.to_string(), "the API key has been revoked");
        assert!(keys.revoke("gone").await.is_ok(), "revoking twice is fine");

        // Revocation through another node: within the cache TTL.
        let elsewhere = open(b, &clock).await;
        let cached = keys.create(NewKey::new("cached", "svc")).await.unwrap();
        assert!(keys.authenticate(cached.secret.expose()).await.is_ok());
        elsewhere.revoke("cached").await.unwrap();
        assert!(
            keys.authenticate(cached.secret.expose()).await.is_ok(),
            "{}: still trusted from the cache inside the TTL",
            b.name
        );
        clock.advance(keys.settings().cache_ttl);
        assert!(
            matches!(
                keys.authenticate(cached.secret.expose()).await,
                Err(AuthError::Revoked)
            ),
            "{}: revoked once the TTL ran out",
            b.name
        );
    }
    drop_backends(backends).await;
}

#[tokio::test]
async fn rotation_keeps_old_secrets_for_the_overlap_only() {
    let backends = backends("rotate").await;
    for b in &backends {
        let clock = Clock::manual(t0());
        let keys = open(b, &clock).await;
        let first = keys.create(NewKey::new("rot", "svc")).await.unwrap().secret;
        assert!(keys.authenticate(first.expose()).await.is_ok());

        let second = keys
            .rotate("rot", Duration::from_secs(3_600))
            .await
            .unwrap();
        assert_ne!(second.secret, first);
        assert!(
            keys.authenticate(first.expose()).await.is_ok(),
            "{}",
            b.name
        );
        assert!(keys.authenticate(second.secret.expose()).await.is_ok());
        let secrets = &second.key.secrets;
        assert_eq!(secrets.len(), 2);
        assert_eq!(secrets[0].prefix, first.prefix());
        assert_eq!(
            secrets[0].expires_at.as_deref(),
            Some("2026-11-25T11:00:00Z")
        );
        assert_eq!(secrets[1].prefix, second.secret.prefix());
        assert_eq!(secrets[1].expires_at, None);
        assert!(secrets.iter().all(|s| s.active));

        // A longer overlap later never extends an earlier end.
        let third = keys
            .rotate("rot", Duration::from_secs(10 * 3_600))
            .await
            .unwrap();
        let ends: Vec<Option<&str>> = third
            .key
            .secrets
            .iter()
            .map(|s| s.expires_at.as_deref())
            .collect();
        assert_eq!(
            ends,
            [
                Some("2026-11-25T11:00:00Z"),
                Some("2026-11-25T20:00:00Z"),
                None
            ]
        );

        clock.advance(Duration::from_secs(3_600));
        assert!(matches!(
            keys.authenticate(first.expose()).await,
            Err(AuthError::Expired)
        ));
        assert!(keys.authenticate(second.secret.expose()).await.is_ok());
        let shown = keys.show("rot").await.unwrap();
        assert_eq!(
            shown.secrets.iter().map(|s| s.active).collect::<Vec<_>>(),
            [false, true, true]
        );

        // Zero overlap: the older secrets end now.
        let fourth = keys.rotate("rot", Duration::ZERO).await.unwrap();
        for old in [&second.secret, &third.secret] {
            assert!(
                matches!(
                    keys.authenticate(old.expose()).await,
                    Err(AuthError::Expired)
                ),
                "{}",
                b.name
            );
        }
        assert!(keys.authenticate(fourth.secret.expose()).await.is_ok());
        // Another node sees the same once its cache entry is re-read.
        let other = open(b, &clock).await;
        assert!(matches!(
            other.authenticate(third.secret.expose()).await,
            Err(AuthError::Expired)
        ));
        assert!(other.authenticate(fourth.secret.expose()).await.is_ok());

        assert!(matches!(
            keys.rotate("missing", Duration::ZERO).await,
            Err(KeyError::NotFound(_))
        ));
        keys.revoke("rot").await.unwrap();
        assert!(matches!(
            keys.rotate("rot", Duration::ZERO).await,
            Err(KeyError::Revoked(_))
        ));
        assert!(matches!(
            keys.authenticate(fourth.secret.expose()).await,
            Err(AuthError::Revoked)
        ));
    }
    drop_backends(backends).await;
}

#[tokio::test]
async fn budgets_accumulate_flush_and_survive_a_restart() {
    let backends = backends("budget").await;
    for b in &backends {
        let clock = Clock::manual(t0());
        let keys = open(b, &clock).await;
        let mut new = NewKey::new("spender", "svc");
        new.budget = KeyBudget {
            daily_usd: Some(1.0),
            monthly_usd: Some(1.5),
        };
        let secret = keys.create(new).await.unwrap().secret;
        let free = keys
            .create(NewKey::new("free", "svc"))
            .await
            .unwrap()
            .secret;
        let info = keys.authenticate(secret.expose()).await.unwrap();
        let free = keys.authenticate(free.expose()).await.unwrap();
        assert!(keys.check_budget(&info).is_ok());
        keys.record_spend(&info, 0.6);
        assert!(keys.check_budget(&info).is_ok());
        keys.record_spend(&info, 0.6);
        keys.record_spend(&free, 100.0);
        assert!(keys.check_budget(&free).is_ok(), "no budget, no limit");
        let e = keys.check_budget(&info).unwrap_err();
        assert_eq!(e.period, BudgetPeriod::Daily);
        assert!((e.spent_usd - 1.2).abs() < 1e-9);
        assert_eq!(
            e.retry_after,
            Duration::from_secs(14 * 3_600),
            "until UTC midnight"
        );
        // A re-read cache entry shares the spend.
        clock.advance(Duration::from_secs(10));
        let reread = keys.authenticate(secret.expose()).await.unwrap();
        assert!(!Arc::ptr_eq(&info, &reread));
        assert!(keys.check_budget(&reread).is_err());
        keys.flush().await;

        // A restart loads today's and this month's spend from the store.
        let restarted = open(b, &clock).await;
        let info2 = restarted.authenticate(secret.expose()).await.unwrap();
        let e = restarted.check_budget(&info2).unwrap_err();
        assert!((e.spent_usd - 1.2).abs() < 1e-9, "{}: {e}", b.name);
        let spend = restarted.show("spender").await.unwrap().spend;
        assert_eq!(spend.today_requests, 2);
        assert!((spend.month_usd - 1.2).abs() < 1e-9);

        // Next day: the daily budget resets, the monthly one does not.
        clock.advance(Duration::from_secs(86_400));
        assert!(restarted.check_budget(&info2).is_ok());
        restarted.record_spend(&info2, 0.4);
        let e = restarted.check_budget(&info2).unwrap_err();
        assert_eq!(e.period, BudgetPeriod::Monthly, "{}", b.name);
        restarted.flush().await;
        // The first node picks up the other node's spend on its next flush.
        assert!(keys.check_budget(&info).is_ok(), "{}: not yet seen", b.name);
        keys.flush().await;
        let e = keys.check_budget(&info).unwrap_err();
        assert_eq!(e.period, BudgetPeriod::Monthly, "{}", b.name);
        assert!((e.spent_usd - 1.6).abs() < 1e-9, "{}: {e}", b.name);

        let usage = b
            .store
            .key_usage(Some(info.id), "d:2026-11-25", "m:2026-11")
            .await
            .unwrap();
        let mut got: Vec<(String, i64)> = usage
            .iter()
            .map(|u| (u.period.clone(), u.requests))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [("d:2026-11-25".to_owned(), 2), ("m:2026-11".to_owned(), 3)],
            "{}",
            b.name
        );
    }
    drop_backends(backends).await;
}

#[tokio::test]
async fn limit_changes_apply_at_once_on_this_node() {
    let backends = backends("limits").await;
    for b in &backends {
        let clock = Clock::manual(t0());
        let keys = open(b, &clock).await;
        let mut new = NewKey::new("lim", "svc");
        new.limits.requests_per_minute = Some(10);
        new.budget.daily_usd = Some(3.0);
        let secret = keys.create(new).await.unwrap().secret;
        assert_eq!(
            keys.authenticate(secret.expose())
                .await
                .unwrap()
                .limits
                .requests_per_minute,
            Some(10)
        );
        let view = keys
            .update_limits(
                "lim",
                LimitsUpdate {
                    requests_per_minute: Update::Remove,
                    tokens_per_minute: Update::Set(500),
                    allowed_routes: Update::Set(vec!["embed".into()]),
                    allow_degraded: Some(false),
                    ..LimitsUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(view.requests_per_minute, None);
        assert_eq!(view.tokens_per_minute, Some(500));
        assert_eq!(view.daily_budget_usd, Some(3.0), "kept");
        let info = keys.authenticate(secret.expose()).await.unwrap();
        assert_eq!(info.limits.requests_per_minute, None, "{}", b.name);
        assert_eq!(info.limits.tokens_per_minute, Some(500));
        assert!(info.allows_route("embed") && !info.allows_route("chat"));
        assert!(!info.allow_degraded);
        assert_eq!(
            invalid_field(
                keys.update_limits(
                    "lim",
                    LimitsUpdate {
                        max_concurrent: Update::Set(0),
                        ..LimitsUpdate::default()
                    }
                )
                .await
            ),
            "max_concurrent"
        );
        let all = keys
            .update_limits(
                "lim",
                LimitsUpdate {
                    allowed_routes: Update::Remove,
                    ..LimitsUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(all.routes, None);
    }
    drop_backends(backends).await;
}

async fn close(store: &Store) {
    match store.pool() {
        Pool::Sqlite(pool) => pool.close().await,
        Pool::Postgres(pool) => pool.close().await,
    }
}

/// With the store gone: fresh entries and known-unknown prefixes answer
/// from memory, malformed keys never needed the store, stale entries are
/// served for `max_stale`, and anything else is a store error (503).
#[tokio::test]
async fn the_cache_answers_while_the_store_is_down() {
    let backends = backends("outage").await;
    for b in &backends {
        let clock = Clock::manual(t0());
        // Its own pool, so closing it leaves the backend usable for cleanup.
        let url = match (b.store.pool(), &b.dir, &b.pg_url) {
            (Pool::Sqlite(_), Some(dir), _) => {
                format!("sqlite://{}", dir.join("store.db").display())
            }
            (_, _, Some(url)) => url.clone(),
            _ => unreachable!(),
        };
        let store = Store::connect(&url, TIMEOUT).await.unwrap();
        let keys = Keys::open(store.clone(), settings(&clock)).await.unwrap();
        let secret = keys.create(NewKey::new("k", "svc")).await.unwrap().secret;
        assert!(keys.authenticate(secret.expose()).await.is_ok());
        let unknown = format!("sy-{}", "B".repeat(43));
        assert!(matches!(
            keys.authenticate(&unknown).await,
            Err(AuthError::Unknown)
        ));

        close(&store).await;
        assert!(
            keys.authenticate(secret.expose()).await.is_ok(),
            "{}",
            b.name
        );
        assert!(matches!(
            keys.authenticate(&unknown).await,
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            keys.authenticate("sy-garbage").await,
            Err(AuthError::Unknown)
        ));
        let e = keys
            .authenticate(&format!("sy-{}", "C".repeat(43)))
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::Store(_)), "{}: {e:?}", b.name);
        assert_eq!(
            e.to_string(),
            "the key store is unavailable; try again shortly"
        );

        clock.advance(Duration::from_secs(60));
        assert!(
            keys.authenticate(secret.expose()).await.is_ok(),
            "{}: stale entry served during the outage",
            b.name
        );
        clock.advance(keys.settings().max_stale);
        assert!(matches!(
            keys.authenticate(secret.expose()).await,
            Err(AuthError::Store(_))
        ));
    }
    drop_backends(backends).await;
}

fn admin_key(value: &str) -> AdminKey {
    let text =
        "[admin]\nkey_env = \"ADMIN_KEY\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    Config::from_toml(text, |_| Some(value.to_owned()))
        .unwrap()
        .admin
        .key
        .unwrap()
}

async fn serve_admin(keys: Keys, key: &AdminKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = switchyard::keys::admin::router(keys, key);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/admin/keys")
}

fn param(reply: &Reply) -> serde_json::Value {
    reply.json()["error"]["param"].clone()
}

#[tokio::test]
async fn admin_api_refuses_strangers_and_round_trips() {
    let backends = backends("admin").await;
    for b in &backends {
        let clock = Clock::manual(t0());
        let keys = open(b, &clock).await;
        let admin_secret = "admin-secret-0123456789";
        let base = serve_admin(keys.clone(), &admin_key(admin_secret)).await;
        let c = client();
        let bearer = format!("Bearer {admin_secret}");
        let auth: &[(&str, &str)] = &[("authorization", &bearer)];
        let virtual_key = keys
            .create(NewKey::new("plain", "svc"))
            .await
            .unwrap()
            .secret;

        // Who may call.
        let virtual_bearer = format!("Bearer {}", virtual_key.expose());
        for (headers, expect) in [
            (vec![], "admin key"),
            (
                vec![("authorization", "Bearer wrong-admin-key-xxxxxx")],
                "not valid",
            ),
            (
                vec![("authorization", "Basic YWRtaW46YWRtaW4=")],
                "admin key",
            ),
            (vec![("x-api-key", "admin-secret-012345678")], "not valid"),
            (
                vec![("authorization", virtual_bearer.as_str())],
                "virtual keys",
            ),
        ] {
            let r = call(&c, Method::GET, &base, "", &headers).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{headers:?}");
            let (message, kind, code) = r.openai_error();
            assert!(message.contains(expect), "{message}");
            assert_eq!(
                (kind.as_str(), code.as_str()),
                ("invalid_request_error", "invalid_admin_key")
            );
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(!r.text().contains(virtual_key.expose()));
        }
        let r = call(&c, Method::GET, &base, "", &[("x-api-key", admin_secret)]).await;
        assert_eq!(r.status, StatusCode::OK, "x-api-key works too");
        // The refusal comes before the body is looked at.
        let r = call(&c, Method::POST, &base, "{", &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);

        // Bad input: 400, OpenAI shape, the field named.
        for (body, field, words) in [
            ("{", None, "not valid JSON"),
            ("[1]", None, "JSON object"),
            (r#"{"service":"s"}"#, Some("name"), "required"),
            (r#"{"name":"x"}"#, Some("service"), "required"),
            (r#"{"name":"a b","service":"s"}"#, Some("name"), "1 to 64"),
            (
                r#"{"name":"x","service":"s","requests_per_minute":"ten"}"#,
                Some("requests_per_minute"),
                "positive integer",
            ),
            (
                r#"{"name":"x","service":"s","requests_per_minute":0}"#,
                Some("requests_per_minute"),
                "positive integer",
            ),
            (
                r#"{"name":"x","service":"s","daily_budget_usd":-2}"#,
                Some("daily_budget_usd"),
                "USD",
            ),
            (
                r#"{"name":"x","service":"s","routes":"chat"}"#,
                Some("routes"),
                "array",
            ),
            (
                r#"{"name":"x","service":"s","routes":[]}"#,
                Some("routes"),
                "at least one",
            ),
            (
                r#"{"name":"x","service":"s","expires_at":"soon"}"#,
                Some("expires_at"),
                "date",
            ),
            (
                r#"{"name":"x","service":"s","expires_at":"2020-01-01"}"#,
                Some("expires_at"),
                "future",
            ),
            (
                r#"{"name":"x","service":"s","expires_in":"90 fortnights"}"#,
                Some("expires_in"),
                "duration",
            ),
            (
                r#"{"name":"x","service":"s","metadata":[1]}"#,
                Some("metadata"),
                "object",
            ),
            (
                r#"{"name":"x","service":"s","allow_degraded":"yes"}"#,
                Some("allow_degraded"),
                "true or false",
            ),
            (
                r#"{"name":"x","service":"s","rpm":5}"#,
                None,
                "unknown field `rpm`",
            ),
        ] {
            let r = call(&c, Method::POST, &base, body, auth).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
            let (message, kind, _) = r.openai_error();
            assert_eq!(kind, "invalid_request_error");
            assert!(message.contains(words), "{body}: {message}");
            assert_eq!(
                param(&r),
                field.map_or(serde_json::Value::Null, Into::into),
                "{body}"
            );
        }

        // Create: 201 and the secret, once.
        let body = serde_json::json!({
            "name": "api-made", "service": "reports", "routes": ["chat-default"],
            "requests_per_minute": 30, "tokens_per_minute": 9000, "max_concurrent": 3,
            "daily_budget_usd": 2.5, "monthly_budget_usd": 40, "expires_in": "90d",
            "allow_degraded": false, "metadata": {"owner": "ops"}
        });
        let r = call(&c, Method::POST, &base, body.to_string(), auth).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let created = r.json();
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert_eq!(created["name"], "api-made");
        assert_eq!(created["expires_at"], "2027-02-23T10:00:00Z");
        assert_eq!(created["secrets"][0]["prefix"], secret[..11]);
        let info = keys.authenticate(&secret).await.unwrap();
        assert_eq!(info.limits.max_concurrent, Some(3));
        assert_eq!(info.budget.monthly_usd, Some(40.0));
        let r = call(&c, Method::POST, &base, body.to_string(), auth).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.openai_error().2, "key_exists");

        // List and show: prefixes, never secrets.
        let r = call(&c, Method::GET, &base, "", auth).await;
        assert_eq!(r.status, StatusCode::OK);
        let listed = r.json();
        assert_eq!(listed["object"], "list");
        assert_eq!(listed["data"].as_array().unwrap().len(), 2);
        assert!(!r.text().contains(&secret[11..]) && !r.text().contains("\"secret\""));
        let r = call(&c, Method::GET, &format!("{base}/api-made"), "", auth).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["metadata"]["owner"], "ops");
        assert!(!r.text().contains(&secret[11..]));
        let r = call(&c, Method::GET, &format!("{base}/nope"), "", auth).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.openai_error().2, "key_not_found");

        // Limits: absent keeps, null removes, a value sets.
        let r = call(
            &c,
            Method::PUT,
            &format!("{base}/api-made/limits"),
            r#"{"requests_per_minute": 99, "daily_budget_usd": null, "routes": null}"#,
            auth,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        assert_eq!(v["requests_per_minute"], 99);
        assert_eq!(v["tokens_per_minute"], 9000);
        assert!(v["daily_budget_usd"].is_null() && v["routes"].is_null());
        let info = keys.authenticate(&secret).await.unwrap();
        assert_eq!(info.limits.requests_per_minute, Some(99), "{}", b.name);
        assert!(info.allows_route("anything"));
        let r = call(
            &c,
            Method::PUT,
            &format!("{base}/api-made/limits"),
            r#"{"max_concurrent": -1}"#,
            auth,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(param(&r), "max_concurrent");
        let r = call(&c, Method::PUT, &format!("{base}/nope/limits"), "{}", auth).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);

        // Rotate: a new secret; the old one listed with its end.
        let r = call(
            &c,
            Method::POST,
            &format!("{base}/api-made/rotate"),
            "{}",
            auth,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(param(&r), "overlap");
        let r = call(
            &c,
            Method::POST,
            &format!("{base}/api-made/rotate"),
            r#"{"overlap":"24h"}"#,
            auth,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let rotated = r.json();
        let new_secret = rotated["secret"].as_str().unwrap().to_owned();
        assert_ne!(new_secret, secret);
        assert_eq!(rotated["secrets"][0]["expires_at"], "2026-11-26T10:00:00Z");
        assert!(rotated["secrets"][1]["expires_at"].is_null());
        assert!(keys.authenticate(&secret).await.is_ok());
        assert!(keys.authenticate(&new_secret).await.is_ok());

        // Revoke: at once, and then it is final.
        let r = call(
            &c,
            Method::POST,
            &format!("{base}/api-made/revoke"),
            "",
            auth,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["status"], "revoked");
        assert!(matches!(
            keys.authenticate(&new_secret).await,
            Err(AuthError::Revoked)
        ));
        let r = call(
            &c,
            Method::POST,
            &format!("{base}/api-made/rotate"),
            r#"{"overlap":"0s"}"#,
            auth,
        )
        .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.openai_error().2, "key_revoked");
    }
    drop_backends(backends).await;
}

#[test]
fn gateway_errors_for_keys_and_budgets() {
    use axum::response::IntoResponse;
    use switchyard::error::GatewayError;
    let cases: Vec<(GatewayError, StatusCode, &str)> = vec![
        (
            AuthError::Missing.into(),
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
        ),
        (
            AuthError::Unknown.into(),
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        ),
        (
            AuthError::Expired.into(),
            StatusCode::UNAUTHORIZED,
            "expired_api_key",
        ),
        (
            AuthError::Revoked.into(),
            StatusCode::UNAUTHORIZED,
            "revoked_api_key",
        ),
        (
            AuthError::Store(Arc::new(switchyard::store::StoreError::Timeout)).into(),
            StatusCode::SERVICE_UNAVAILABLE,
            "key_store_unavailable",
        ),
        (
            GatewayError::RouteNotAllowed {
                route: "embed".into(),
            },
            StatusCode::FORBIDDEN,
            "model_not_allowed",
        ),
    ];
    for (error, status, code) in cases {
        assert_eq!(error.status(), status, "{error}");
        assert_eq!(error.code(), code);
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let response = error.into_response();
        assert_eq!(
            response.headers().contains_key("www-authenticate"),
            unauthorized,
            "{code}"
        );
    }
    let budget = GatewayError::from(switchyard::keys::BudgetExceeded {
        period: BudgetPeriod::Daily,
        limit_usd: 5.0,
        spent_usd: 5.25,
        retry_after: Duration::from_millis(3_600_500),
    });
    assert_eq!(budget.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(budget.code(), "budget_exceeded");
    assert_eq!(
        budget.to_string(),
        "this API key's daily budget of $5.00 is spent ($5.25 used); it resets in 1h"
    );
    let response = budget.into_response();
    assert_eq!(response.headers()["retry-after"], "3601");
}

#[test]
fn presented_secret_reads_bearer_or_x_api_key() {
    use switchyard::keys::presented_secret;
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    };
    assert_eq!(
        presented_secret(&headers(&[("authorization", "Bearer sy-a")])),
        Some("sy-a")
    );
    assert_eq!(
        presented_secret(&headers(&[("authorization", "bearer  sy-a ")])),
        Some("sy-a")
    );
    assert_eq!(
        presented_secret(&headers(&[("x-api-key", "sy-b")])),
        Some("sy-b")
    );
    assert_eq!(
        presented_secret(&headers(&[("authorization", "Basic abc")])),
        None
    );
    assert_eq!(
        presented_secret(&headers(&[
            ("authorization", "Basic abc"),
            ("x-api-key", "sy-c")
        ])),
        Some("sy-c")
    );
    assert_eq!(
        presented_secret(&headers(&[("authorization", "Bearer ")])),
        None
    );
    assert_eq!(presented_secret(&headers(&[])), None);
}

fn cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn ok_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The CLI end to end through the built binary, against a temp SQLite file.
#[tokio::test]
async fn cli_manages_keys_and_never_lists_a_secret() {
    let dir = std::env::temp_dir().join(format!("switchyard-keys-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keys.db");
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
             [routes.chat-default]\ntargets = [{{ provider = \"p\", model = \"m\" }}]\n",
            db.display()
        ),
    )
    .unwrap();

    let created: serde_json::Value = serde_json::from_str(&ok_stdout(&cli(
        &config,
        &[
            "create",
            "ci-bot",
            "--service",
            "ci",
            "--routes",
            "chat-default,embed",
            "--rpm",
            "60",
            "--tpm",
            "5000",
            "--concurrency",
            "4",
            "--daily-budget",
            "2.5",
            "--monthly-budget",
            "50",
            "--expires-in",
            "90d",
            "--no-degraded",
            "--metadata",
            r#"{"owner":"ci"}"#,
            "--json",
        ],
    )))
    .unwrap();
    let first = created["secret"].as_str().unwrap().to_owned();
    assert!(first.starts_with("sy-"));
    assert_eq!(
        created["routes"],
        serde_json::json!(["chat-default", "embed"])
    );
    assert_eq!(created["max_concurrent"], 4);
    assert_eq!(created["allow_degraded"], false);
    assert_eq!(created["metadata"]["owner"], "ci");
    assert!(created["expires_at"].is_string());

    let text = ok_stdout(&cli(
        &config,
        &[
            "create",
            "other",
            "--service",
            "web",
            "--expires",
            "2099-01-01",
        ],
    ));
    assert!(text.contains("shown only now"), "{text}");
    let other = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sy-"))
        .expect("the secret on a line of its own")
        .to_owned();
    assert_eq!(other.len(), 46);
    assert!(text.contains("2099-01-01T00:00:00Z"));

    let limits: serde_json::Value = serde_json::from_str(&ok_stdout(&cli(
        &config,
        &[
            "set-limits",
            "ci-bot",
            "--rpm",
            "none",
            "--tpm",
            "1000",
            "--all-routes",
            "--allow-degraded",
            "true",
            "--json",
        ],
    )))
    .unwrap();
    assert!(limits["requests_per_minute"].is_null());
    assert_eq!(limits["tokens_per_minute"], 1000);
    assert!(limits["routes"].is_null());
    assert_eq!(limits["allow_degraded"], true);
    assert_eq!(limits["daily_budget_usd"], 2.5, "kept");

    let rotated: serde_json::Value = serde_json::from_str(&ok_stdout(&cli(
        &config,
        &["rotate", "ci-bot", "--overlap", "1h", "--json"],
    )))
    .unwrap();
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert_eq!(rotated["secrets"].as_array().unwrap().len(), 2);

    let list = ok_stdout(&cli(&config, &["list"]));
    assert!(list.contains("ci-bot") && list.contains("other"), "{list}");
    assert!(list.contains(&format!("{}…", &first[..11])), "{list}");
    assert!(list.contains(&format!("{}…", &second[..11])), "{list}");
    let list_json = ok_stdout(&cli(&config, &["list", "--json"]));
    let rows: Vec<serde_json::Value> = list_json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.get("secret").is_none()));
    let show = ok_stdout(&cli(&config, &["show", "ci-bot"]));
    assert!(show.contains("service:         ci"), "{show}");
    for secret in [&first, &second, &other] {
        for output in [&list, &list_json, &show] {
            assert!(!output.contains(&secret[11..]), "secret printed: {output}");
        }
    }

    let revoked = ok_stdout(&cli(&config, &["revoke", "ci-bot"]));
    assert!(revoked.contains("status:          revoked"), "{revoked}");

    // Failures: a message naming the problem, non-zero exit.
    for (args, words) in [
        (vec!["show", "nope"], "no key named \"nope\""),
        (
            vec!["create", "bad", "--service", "x", "--rpm", "0"],
            "requests_per_minute",
        ),
        (vec!["create", "other", "--service", "x"], "already exists"),
        (vec!["rotate", "ci-bot", "--overlap", "1h"], "revoked"),
        (
            vec!["create", "x", "--service", "s", "--expires", "tomorrow"],
            "not a date",
        ),
        (
            vec!["create", "x", "--service", "s", "--metadata", "[1]"],
            "JSON object",
        ),
    ] {
        let out = cli(&config, &args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }

    // What the CLI wrote is what the gateway reads.
    let store = Store::connect(&format!("sqlite://{}", db.display()), TIMEOUT)
        .await
        .unwrap();
    let keys = Keys::open(store, KeySettings::default()).await.unwrap();
    assert!(matches!(
        keys.authenticate(&second).await,
        Err(AuthError::Revoked)
    ));
    let info = keys.authenticate(&other).await.unwrap();
    assert_eq!(info.service, "web");
    drop(keys);

    let mut stored = Vec::new();
    for file in ["keys.db", "keys.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(file)) {
            stored.extend(bytes);
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains(&first[..11]), "the scan reads the rows");
    for secret in [&first, &second, &other] {
        assert!(!stored.contains(&secret[11..]), "secret stored");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
