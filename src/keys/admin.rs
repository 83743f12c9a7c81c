//! The admin HTTP API for virtual keys, under `/admin/keys` (described in
//! docs/admin-api.openapi.yaml). Every request needs the admin key (from
//! the environment variable `[admin] key_env` names), compared in constant
//! time; virtual keys are refused. JSON in and out; errors in the OpenAI
//! shape, naming the offending field in `param`. The caller mounts the
//! router (main listener or `[admin] listen`).

use super::manage::{Expiry, LimitsUpdate, NewKey, Update};
use super::secret::{self, Digest};
use super::{presented_secret, KeyBudget, KeyError, KeyLimits, Keys};
use crate::config::AdminKey;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

struct AdminState {
    keys: Keys,
    /// Comparing digests keeps the comparison constant-time whatever the
    /// presented length.
    admin_digest: Digest,
}

type Shared = Arc<AdminState>;

/// `/admin/keys` and below, guarded by `admin_key`.
pub fn router(keys: Keys, admin_key: &AdminKey) -> Router {
    let state = Arc::new(AdminState {
        keys,
        admin_digest: secret::digest(admin_key.expose()),
    });
    Router::new()
        .route("/admin/keys", post(create).get(list))
        .route("/admin/keys/{name}", get(show))
        .route("/admin/keys/{name}/rotate", post(rotate))
        .route("/admin/keys/{name}/revoke", post(revoke))
        .route("/admin/keys/{name}/limits", put(limits))
        .with_state(state)
}

/// An admin API failure, answered in the OpenAI error shape.
#[derive(Debug)]
enum AdminError {
    Unauthorized(&'static str),
    BadRequest {
        param: Option<&'static str>,
        message: String,
    },
    Key(KeyError),
}

impl From<KeyError> for AdminError {
    fn from(e: KeyError) -> Self {
        AdminError::Key(e)
    }
}

fn bad(param: &'static str, message: impl Into<String>) -> AdminError {
    AdminError::BadRequest {
        param: Some(param),
        message: format!("`{param}` {}", message.into()),
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, kind, code, param, message) = match self {
            AdminError::Unauthorized(message) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_admin_key",
                None,
                message.to_owned(),
            ),
            AdminError::BadRequest { param, message } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_value",
                param,
                message,
            ),
            AdminError::Key(e) => {
                let (status, code, param) = match &e {
                    KeyError::NotFound(_) => (StatusCode::NOT_FOUND, "key_not_found", None),
                    KeyError::Exists(_) => (StatusCode::CONFLICT, "key_exists", Some("name")),
                    KeyError::Revoked(_) => (StatusCode::CONFLICT, "key_revoked", None),
                    KeyError::Invalid { field, .. } => {
                        (StatusCode::BAD_REQUEST, "invalid_value", Some(*field))
                    }
                    KeyError::Store(_) => {
                        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
                    }
                };
                let message = match &e {
                    KeyError::Store(detail) => {
                        tracing::error!(error = %detail, "admin API: key store failed");
                        "the key store is unavailable; try again shortly".to_owned()
                    }
                    other => other.to_string(),
                };
                let kind = if status == StatusCode::SERVICE_UNAVAILABLE {
                    "service_unavailable"
                } else {
                    "invalid_request_error"
                };
                (status, kind, code, param, message)
            }
        };
        let body = serde_json::json!({
            "error": { "message": message, "type": kind, "param": param, "code": code }
        });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Proof that the request carried the admin key.
struct Admin;

impl FromRequestParts<Shared> for Admin {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, AdminError> {
        check_admin(&parts.headers, &state.admin_digest)
    }
}

fn check_admin(headers: &http::HeaderMap, admin_digest: &Digest) -> Result<Admin, AdminError> {
    let presented = presented_secret(headers).ok_or(AdminError::Unauthorized(
        "the admin API needs the admin key: send `Authorization: Bearer <admin key>`",
    ))?;
    // The admin key can never look like a virtual key (config refuses
    // it), so saying so reveals nothing about it.
    if presented.starts_with(secret::SCHEME) {
        return Err(AdminError::Unauthorized(
            "virtual keys cannot use the admin API; use the admin key",
        ));
    }
    if secret::digests_equal(&secret::digest(presented), admin_digest) {
        Ok(Admin)
    } else {
        Err(AdminError::Unauthorized("the admin key is not valid"))
    }
}

/// The admin key's digest, for [`admin_check`].
pub fn admin_digest(admin_key: &AdminKey) -> Digest {
    secret::digest(admin_key.expose())
}

/// For other admin routes (the server's operator views): `Err` carries the
/// 401 response the admin API itself would give.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response to send; boxing it would only add an allocation"
)]
pub fn admin_check(headers: &http::HeaderMap, admin_digest: &Digest) -> Result<(), Response> {
    check_admin(headers, admin_digest)
        .map(|_| ())
        .map_err(IntoResponse::into_response)
}

fn key_name(path: Result<Path<String>, PathRejection>) -> Result<String, AdminError> {
    path.map(|Path(name)| name)
        .map_err(|e| bad("name", format!("is not a valid path segment: {e}")))
}

/// The request body as a JSON object, checked against the fields the
/// endpoint knows.
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(body: &Bytes, known: &[&str]) -> Result<Fields, AdminError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| AdminError::BadRequest {
            param: None,
            message: format!("the request body is not valid JSON: {e}"),
        })?;
        let Value::Object(map) = value else {
            return Err(AdminError::BadRequest {
                param: None,
                message: "the request body must be a JSON object".to_owned(),
            });
        };
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(AdminError::BadRequest {
                param: None,
                message: format!(
                    "unknown field `{unknown}`; known fields: {}",
                    known.join(", ")
                ),
            });
        }
        Ok(Fields(map))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, AdminError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(name, "must be a string")),
        }
    }

    fn required_string(&self, name: &'static str) -> Result<String, AdminError> {
        self.string(name)?.ok_or_else(|| bad(name, "is required"))
    }

    fn bool(&self, name: &'static str) -> Result<Option<bool>, AdminError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(name, "must be true or false")),
        }
    }

    /// Absent: keep; `null`: remove; a value: set.
    fn update<T>(
        &self,
        name: &'static str,
        read: impl Fn(&Value) -> Option<T>,
        expected: &str,
    ) -> Result<Update<T>, AdminError> {
        match self.0.get(name) {
            None => Ok(Update::Keep),
            Some(Value::Null) => Ok(Update::Remove),
            Some(value) => read(value)
                .map(Update::Set)
                .ok_or_else(|| bad(name, format!("must be {expected}, or null for none"))),
        }
    }

    fn limit(&self, name: &'static str) -> Result<Update<u32>, AdminError> {
        self.update(
            name,
            |v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
            },
            "a positive integer",
        )
    }

    fn usd(&self, name: &'static str) -> Result<Update<f64>, AdminError> {
        self.update(
            name,
            |v| v.as_f64().filter(|n| n.is_finite() && *n > 0.0),
            "a positive number of USD",
        )
    }

    fn routes(&self) -> Result<Update<Vec<String>>, AdminError> {
        self.update(
            "routes",
            |v| {
                v.as_array()?
                    .iter()
                    .map(|r| r.as_str().map(str::to_owned))
                    .collect()
            },
            "an array of route names",
        )
    }
}

fn set<T>(update: Update<T>) -> Option<T> {
    match update {
        Update::Set(value) => Some(value),
        Update::Keep | Update::Remove => None,
    }
}

fn duration(fields: &Fields, name: &'static str) -> Result<Option<Duration>, AdminError> {
    fields
        .string(name)?
        .map(|text| {
            humantime::parse_duration(&text)
                .map_err(|e| bad(name, format!("is not a duration (\"24h\", \"90d\"): {e}")))
        })
        .transpose()
}

const CREATE_FIELDS: &[&str] = &[
    "name",
    "service",
    "routes",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "daily_budget_usd",
    "monthly_budget_usd",
    "expires_at",
    "expires_in",
    "allow_degraded",
    "metadata",
];

async fn create(
    _: Admin,
    State(state): State<Shared>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let f = Fields::parse(&body, CREATE_FIELDS)?;
    let mut new = NewKey::new(f.required_string("name")?, f.required_string("service")?);
    new.allowed_routes = set(f.routes()?);
    new.limits = KeyLimits {
        requests_per_minute: set(f.limit("requests_per_minute")?),
        tokens_per_minute: set(f.limit("tokens_per_minute")?),
        max_concurrent: set(f.limit("max_concurrent")?),
    };
    new.budget = KeyBudget {
        daily_usd: set(f.usd("daily_budget_usd")?),
        monthly_usd: set(f.usd("monthly_budget_usd")?),
    };
    new.expires = match (f.string("expires_at")?, duration(&f, "expires_in")?) {
        (Some(_), Some(_)) => {
            return Err(bad("expires_in", "cannot be combined with `expires_at`"));
        }
        (Some(at), None) => Some(Expiry::At(super::parse_date(&at).ok_or_else(|| {
            bad(
                "expires_at",
                "must be a date (2027-01-01) or an RFC 3339 UTC time",
            )
        })?)),
        (None, Some(after)) => Some(Expiry::After(after)),
        (None, None) => None,
    };
    if let Some(allow) = f.bool("allow_degraded")? {
        new.allow_degraded = allow;
    }
    match f.get("metadata") {
        None => {}
        Some(Value::Object(map)) => new.metadata = map.clone(),
        Some(_) => return Err(bad("metadata", "must be a JSON object")),
    }
    let issued = state.keys.create(new).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn list(_: Admin, State(state): State<Shared>) -> Result<Response, AdminError> {
    let keys = state.keys.list().await?;
    Ok(Json(serde_json::json!({ "object": "list", "data": keys })).into_response())
}

async fn show(
    _: Admin,
    State(state): State<Shared>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let name = key_name(name)?;
    Ok(Json(state.keys.show(&name).await?).into_response())
}

async fn rotate(
    _: Admin,
    State(state): State<Shared>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let name = key_name(name)?;
    let f = Fields::parse(&body, &["overlap"])?;
    let overlap = duration(&f, "overlap")?.ok_or_else(|| {
        bad(
            "overlap",
            "is required: how long older secrets keep working (\"0s\" ends them now)",
        )
    })?;
    Ok(Json(state.keys.rotate(&name, overlap).await?).into_response())
}

async fn revoke(
    _: Admin,
    State(state): State<Shared>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminError> {
    let name = key_name(name)?;
    Ok(Json(state.keys.revoke(&name).await?).into_response())
}

const LIMIT_FIELDS: &[&str] = &[
    "routes",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "daily_budget_usd",
    "monthly_budget_usd",
    "allow_degraded",
];

async fn limits(
    _: Admin,
    State(state): State<Shared>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let name = key_name(name)?;
    let f = Fields::parse(&body, LIMIT_FIELDS)?;
    let update = LimitsUpdate {
        allowed_routes: f.routes()?,
        requests_per_minute: f.limit("requests_per_minute")?,
        tokens_per_minute: f.limit("tokens_per_minute")?,
        max_concurrent: f.limit("max_concurrent")?,
        daily_budget_usd: f.usd("daily_budget_usd")?,
        monthly_budget_usd: f.usd("monthly_budget_usd")?,
        allow_degraded: f.bool("allow_degraded")?,
    };
    Ok(Json(state.keys.update_limits(&name, update).await?).into_response())
}
