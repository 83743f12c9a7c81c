//! The management operations shared by the CLI and the admin API: create,
//! list, show, rotate, revoke and change limits. Validates input (every
//! error names its field), turns rows into views. A secret leaves this
//! module only inside [`Issued`], once, when it is created.

use super::budget::{date_of_day, period_labels, SpendCell};
use super::secret::{self, PrefixKey, Secret};
use super::{KeyBudget, KeyError, KeyInfo, KeyLimits, Keys};
use crate::store::{KeyRow, SecretRow, StoreError, UsageRow};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A field of an update: keep it, remove it (no limit) or set it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Update<T> {
    #[default]
    Keep,
    Remove,
    Set(T),
}

impl<T> Update<T> {
    fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Update::Keep => current,
            Update::Remove => None,
            Update::Set(value) => Some(value),
        }
    }
}

/// When a new key stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Unix time in milliseconds.
    At(i64),
    /// This long after creation.
    After(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub name: String,
    pub service: String,
    /// `None`: every route.
    pub allowed_routes: Option<Vec<String>>,
    pub expires: Option<Expiry>,
    pub limits: KeyLimits,
    pub budget: KeyBudget,
    pub allow_degraded: bool,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl NewKey {
    /// Every route, no expiry, no limits, degraded service allowed.
    pub fn new(name: impl Into<String>, service: impl Into<String>) -> NewKey {
        NewKey {
            name: name.into(),
            service: service.into(),
            allowed_routes: None,
            expires: None,
            limits: KeyLimits::default(),
            budget: KeyBudget::default(),
            allow_degraded: true,
            metadata: serde_json::Map::new(),
        }
    }
}

/// A change of a key's routes, limits and budgets; `Keep` fields stay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsUpdate {
    /// `Remove`: every route.
    pub allowed_routes: Update<Vec<String>>,
    pub requests_per_minute: Update<u32>,
    pub tokens_per_minute: Update<u32>,
    pub max_concurrent: Update<u32>,
    pub daily_budget_usd: Update<f64>,
    pub monthly_budget_usd: Update<f64>,
    pub allow_degraded: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

/// One secret as list/show report it: prefix and dates only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretView {
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub active: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SpendView {
    pub today_usd: f64,
    pub month_usd: f64,
    pub today_requests: i64,
    pub month_requests: i64,
}

/// A key as list/show and the admin API report it. Holds no secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyView {
    pub id: i64,
    pub name: String,
    pub service: String,
    pub status: KeyStatus,
    /// `null`: every route.
    pub routes: Option<Vec<String>>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub max_concurrent: Option<u32>,
    pub daily_budget_usd: Option<f64>,
    pub monthly_budget_usd: Option<f64>,
    pub allow_degraded: bool,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub secrets: Vec<SecretView>,
    pub spend: SpendView,
}

/// A key with a secret just issued for it: the only time the secret is
/// shown. Serializes as the key's fields plus `secret`.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    #[serde(flatten)]
    pub key: KeyView,
    #[serde(serialize_with = "expose")]
    pub secret: Secret,
}

fn expose<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

/// A date (`2027-01-01`, midnight UTC) or an RFC 3339 UTC time
/// (`2027-01-01T12:00:00Z`), as Unix milliseconds.
pub fn parse_date(text: &str) -> Option<i64> {
    let text = text.trim();
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    let at = humantime::parse_rfc3339_weak(&full).ok()?;
    i64::try_from(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, through [`LATEST_EXPIRY_MS`] (the last second of
/// 9999, beyond jiff's `Timestamp` but within its civil dates); later or
/// earlier than the years -9999..=9999 reads as those ends.
pub(crate) fn rfc3339(unix_ms: i64) -> String {
    let day = unix_ms.div_euclid(86_400_000);
    let secs = unix_ms.rem_euclid(86_400_000) / 1_000;
    let (h, m, s) = (secs / 3_600, secs % 3_600 / 60, secs % 60);
    format!("{}T{h:02}:{m:02}:{s:02}Z", date_of_day(day))
}

/// Expiries end by the last second of the year 9999, so every date tool
/// can still read them.
const LATEST_EXPIRY_MS: i64 = 253_402_300_799_000;

fn invalid(field: &'static str, message: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        field,
        message: message.into(),
    }
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            "must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
        ))
    }
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), KeyError> {
    if text.trim().is_empty() || text.len() > max || text.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("must be 1 to {max} printable characters"),
        ));
    }
    Ok(())
}

fn check_routes(routes: &Option<Vec<String>>) -> Result<(), KeyError> {
    let Some(routes) = routes else { return Ok(()) };
    if routes.is_empty() {
        return Err(invalid(
            "routes",
            "name at least one route, or leave it out for every route",
        ));
    }
    for route in routes {
        check_text("routes", route, 256)?;
    }
    Ok(())
}

fn check_limits(limits: &KeyLimits) -> Result<(), KeyError> {
    for (field, value) in [
        ("requests_per_minute", limits.requests_per_minute),
        ("tokens_per_minute", limits.tokens_per_minute),
        ("max_concurrent", limits.max_concurrent),
    ] {
        if value == Some(0) {
            return Err(invalid(
                field,
                "must be at least 1; leave it out for no limit",
            ));
        }
    }
    Ok(())
}

fn check_budget(budget: &KeyBudget) -> Result<(), KeyError> {
    for (field, value) in [
        ("daily_budget_usd", budget.daily_usd),
        ("monthly_budget_usd", budget.monthly_usd),
    ] {
        if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(invalid(
                field,
                format!("{v} is not a positive amount of USD; leave it out for no budget"),
            ));
        }
    }
    Ok(())
}

const MAX_METADATA: usize = 16 << 10;

fn to_json<T: Serialize>(value: &T) -> String {
    // Vec<String> and JSON maps always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

fn as_db(value: Option<u32>) -> Option<i64> {
    value.map(i64::from)
}

fn from_db(value: Option<i64>) -> Option<u32> {
    value.map(|v| u32::try_from(v.max(1)).unwrap_or(u32::MAX))
}

fn limits_of(row: &KeyRow) -> KeyLimits {
    KeyLimits {
        requests_per_minute: from_db(row.requests_per_minute),
        tokens_per_minute: from_db(row.tokens_per_minute),
        max_concurrent: from_db(row.max_concurrent),
    }
}

fn routes_of(row: &KeyRow) -> Option<Vec<String>> {
    let text = row.allowed_routes.as_ref()?;
    Some(serde_json::from_str(text).unwrap_or_else(|_| {
        // Fail closed: a damaged list allows nothing rather than everything.
        tracing::error!(key = %row.name, "stored route list is not a JSON array of strings; allowing no route");
        Vec::new()
    }))
}

fn metadata_of(row: &KeyRow) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(&row.metadata).unwrap_or_else(|_| {
        tracing::error!(key = %row.name, "stored metadata is not a JSON object; ignoring it");
        serde_json::Map::new()
    })
}

pub(crate) fn key_info(row: KeyRow, spend: Arc<SpendCell>) -> KeyInfo {
    KeyInfo {
        allowed_routes: routes_of(&row),
        limits: limits_of(&row),
        budget: KeyBudget {
            daily_usd: row.daily_budget_usd,
            monthly_usd: row.monthly_budget_usd,
        },
        metadata: metadata_of(&row),
        id: row.id,
        allow_degraded: row.allow_degraded,
        expires_at_ms: row.expires_at_ms,
        revoked_at_ms: row.revoked_at_ms,
        name: row.name,
        service: row.service,
        spend,
    }
}

fn view(row: &KeyRow, secrets: &[SecretRow], spend: SpendView, now: i64) -> KeyView {
    let passed = |at: Option<i64>| at.is_some_and(|at| at <= now);
    let status = if row.revoked_at_ms.is_some() {
        KeyStatus::Revoked
    } else if passed(row.expires_at_ms) {
        KeyStatus::Expired
    } else {
        KeyStatus::Active
    };
    KeyView {
        id: row.id,
        name: row.name.clone(),
        service: row.service.clone(),
        status,
        routes: routes_of(row),
        requests_per_minute: from_db(row.requests_per_minute),
        tokens_per_minute: from_db(row.tokens_per_minute),
        max_concurrent: from_db(row.max_concurrent),
        daily_budget_usd: row.daily_budget_usd,
        monthly_budget_usd: row.monthly_budget_usd,
        allow_degraded: row.allow_degraded,
        metadata: metadata_of(row),
        created_at: rfc3339(row.created_at_ms),
        expires_at: row.expires_at_ms.map(rfc3339),
        revoked_at: row.revoked_at_ms.map(rfc3339),
        secrets: secrets
            .iter()
            .filter(|s| s.key_id == row.id)
            .map(|s| SecretView {
                prefix: s.prefix.clone(),
                created_at: rfc3339(s.created_at_ms),
                expires_at: s.expires_at_ms.map(rfc3339),
                active: status == KeyStatus::Active && !passed(s.expires_at_ms),
            })
            .collect(),
        spend,
    }
}

fn spend_from_rows(rows: &[UsageRow], key_id: i64, now: i64) -> SpendView {
    let (day, month) = period_labels(now);
    let mut spend = SpendView::default();
    for row in rows.iter().filter(|r| r.key_id == key_id) {
        if row.period == day {
            spend.today_usd = row.cost_usd;
            spend.today_requests = row.requests;
        } else if row.period == month {
            spend.month_usd = row.cost_usd;
            spend.month_requests = row.requests;
        }
    }
    spend
}

impl Keys {
    /// This node's live totals when it has seen the key, else the store's.
    fn spend_of(&self, rows: &[UsageRow], key_id: i64, now: i64) -> SpendView {
        match self.inner.budgets.existing(key_id) {
            Some(cell) => {
                let (today_usd, month_usd, today_requests, month_requests) = cell.totals(now);
                SpendView {
                    today_usd,
                    month_usd,
                    today_requests,
                    month_requests,
                }
            }
            None => spend_from_rows(rows, key_id, now),
        }
    }

    async fn view_of(&self, row: &KeyRow) -> Result<KeyView, KeyError> {
        let now = self.now_ms();
        let store = &self.inner.store;
        let secrets = store.key_secrets(Some(row.id)).await?;
        let (day, month) = period_labels(now);
        let usage = store.key_usage(Some(row.id), &day, &month).await?;
        Ok(view(row, &secrets, self.spend_of(&usage, row.id, now), now))
    }

    async fn existing(&self, name: &str) -> Result<KeyRow, KeyError> {
        self.inner
            .store
            .key_by_name(name)
            .await?
            .ok_or_else(|| KeyError::NotFound(name.to_owned()))
    }

    fn new_secret(key_id: i64, now: i64) -> (Secret, SecretRow) {
        let secret = Secret::generate();
        let row = SecretRow {
            key_id,
            prefix: secret.prefix().to_owned(),
            hash: secret::to_hex(&secret.digest()),
            created_at_ms: now,
            expires_at_ms: None,
        };
        (secret, row)
    }

    /// Creates a key with its first secret, returned once in [`Issued`].
    pub async fn create(&self, new: NewKey) -> Result<Issued, KeyError> {
        check_name(&new.name)?;
        check_text("service", &new.service, 128)?;
        check_routes(&new.allowed_routes)?;
        check_limits(&new.limits)?;
        check_budget(&new.budget)?;
        let metadata = to_json(&new.metadata);
        if metadata.len() > MAX_METADATA {
            return Err(invalid(
                "metadata",
                format!("is {} bytes; at most {MAX_METADATA}", metadata.len()),
            ));
        }
        let now = self.now_ms();
        let expires_at_ms = match new.expires {
            None => None,
            Some(Expiry::At(at)) if at > LATEST_EXPIRY_MS => {
                return Err(invalid("expires_at", "is after the year 9999"))
            }
            Some(Expiry::At(at)) if at > now => Some(at),
            Some(Expiry::At(_)) => return Err(invalid("expires_at", "is not in the future")),
            Some(Expiry::After(after))
                if now.saturating_add(super::millis(after)) > LATEST_EXPIRY_MS =>
            {
                return Err(invalid("expires_in", "ends after the year 9999"))
            }
            Some(Expiry::After(after)) if !after.is_zero() => {
                Some(now.saturating_add(super::millis(after)))
            }
            Some(Expiry::After(_)) => {
                return Err(invalid("expires_in", "must be greater than zero"))
            }
        };
        let mut row = KeyRow {
            id: 0,
            name: new.name,
            service: new.service,
            allowed_routes: new.allowed_routes.as_ref().map(to_json),
            expires_at_ms,
            requests_per_minute: as_db(new.limits.requests_per_minute),
            tokens_per_minute: as_db(new.limits.tokens_per_minute),
            max_concurrent: as_db(new.limits.max_concurrent),
            daily_budget_usd: new.budget.daily_usd,
            monthly_budget_usd: new.budget.monthly_usd,
            allow_degraded: new.allow_degraded,
            metadata,
            created_at_ms: now,
            revoked_at_ms: None,
        };
        let (secret, mut secret_row) = Self::new_secret(0, now);
        row.id = match self.inner.store.insert_key(&row, &secret_row).await {
            Ok(id) => id,
            Err(StoreError::Duplicate) => return Err(KeyError::Exists(row.name)),
            Err(e) => return Err(e.into()),
        };
        secret_row.key_id = row.id;
        self.inner
            .cache
            .invalidate(row.id, PrefixKey::from_prefix(&secret_row.prefix));
        let key = view(&row, &[secret_row], SpendView::default(), now);
        Ok(Issued { key, secret })
    }

    /// Every key, revoked and expired ones included, by name.
    pub async fn list(&self) -> Result<Vec<KeyView>, KeyError> {
        let now = self.now_ms();
        let store = &self.inner.store;
        let rows = store.list_keys().await?;
        let secrets = store.key_secrets(None).await?;
        let (day, month) = period_labels(now);
        let usage = store.key_usage(None, &day, &month).await?;
        let mut by_key: HashMap<i64, Vec<SecretRow>> = HashMap::new();
        for s in secrets {
            by_key.entry(s.key_id).or_default().push(s);
        }
        Ok(rows
            .iter()
            .map(|row| {
                let secrets = by_key.get(&row.id).map_or(&[][..], Vec::as_slice);
                view(row, secrets, self.spend_of(&usage, row.id, now), now)
            })
            .collect())
    }

    pub async fn show(&self, name: &str) -> Result<KeyView, KeyError> {
        let row = self.existing(name).await?;
        self.view_of(&row).await
    }

    /// Issues a new secret for the key; its other secrets keep working for
    /// `overlap` (or less, if they already expire sooner). Zero overlap
    /// ends them now.
    pub async fn rotate(&self, name: &str, overlap: Duration) -> Result<Issued, KeyError> {
        let row = self.existing(name).await?;
        if row.revoked_at_ms.is_some() {
            return Err(KeyError::Revoked(row.name));
        }
        let now = self.now_ms();
        let (secret, secret_row) = Self::new_secret(row.id, now);
        self.inner
            .store
            .add_key_secret(&secret_row, now.saturating_add(super::millis(overlap)))
            .await?;
        self.inner
            .cache
            .invalidate(row.id, PrefixKey::from_prefix(&secret_row.prefix));
        Ok(Issued {
            key: self.view_of(&row).await?,
            secret,
        })
    }

    /// Revokes the key and every secret of it, at once. Revoking a revoked
    /// key changes nothing.
    pub async fn revoke(&self, name: &str) -> Result<KeyView, KeyError> {
        let mut row = self.existing(name).await?;
        if row.revoked_at_ms.is_none() {
            let now = self.now_ms();
            self.inner.store.revoke_key(row.id, now).await?;
            row.revoked_at_ms = Some(now);
        }
        self.inner.cache.invalidate(row.id, None);
        self.view_of(&row).await
    }

    /// Changes routes, limits, budgets or `allow_degraded`.
    pub async fn update_limits(
        &self,
        name: &str,
        update: LimitsUpdate,
    ) -> Result<KeyView, KeyError> {
        let mut row = self.existing(name).await?;
        if row.revoked_at_ms.is_some() {
            return Err(KeyError::Revoked(row.name));
        }
        let routes = update.allowed_routes.apply(routes_of(&row));
        check_routes(&routes)?;
        let limits = KeyLimits {
            requests_per_minute: update
                .requests_per_minute
                .apply(from_db(row.requests_per_minute)),
            tokens_per_minute: update
                .tokens_per_minute
                .apply(from_db(row.tokens_per_minute)),
            max_concurrent: update.max_concurrent.apply(from_db(row.max_concurrent)),
        };
        check_limits(&limits)?;
        let budget = KeyBudget {
            daily_usd: update.daily_budget_usd.apply(row.daily_budget_usd),
            monthly_usd: update.monthly_budget_usd.apply(row.monthly_budget_usd),
        };
        check_budget(&budget)?;
        row.allowed_routes = routes.as_ref().map(to_json);
        row.requests_per_minute = as_db(limits.requests_per_minute);
        row.tokens_per_minute = as_db(limits.tokens_per_minute);
        row.max_concurrent = as_db(limits.max_concurrent);
        row.daily_budget_usd = budget.daily_usd;
        row.monthly_budget_usd = budget.monthly_usd;
        row.allow_degraded = update.allow_degraded.unwrap_or(row.allow_degraded);
        self.inner.store.update_key_limits(&row).await?;
        self.inner.cache.invalidate(row.id, None);
        self.view_of(&row).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_for_any_time() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_066_600_999), "2025-11-25T10:30:00Z");
        assert_eq!(rfc3339(LATEST_EXPIRY_MS), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert!(rfc3339(i64::MAX).starts_with("9999-12-31T"));
        assert!(rfc3339(i64::MIN).starts_with("-009999-01-01T"));
        assert_eq!(parse_date("2027-01-01"), Some(1_798_761_600_000));
        assert_eq!(
            parse_date("2027-01-01T12:00:00Z"),
            Some(1_798_761_600_000 + 12 * 3_600_000)
        );
        for bad in [
            "",
            "tomorrow",
            "2027-13-01",
            "2027-01-01T00:00:00+02:00",
            "é027-01-01",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
