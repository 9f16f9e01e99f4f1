//! orstream-api: the surgical record over a read-only, authenticated HTTP + JSON API.
//!
//! Routes (every one needs `Authorization: Bearer <token>`, see [`access`]):
//! - `GET /v1/cases?room=&from_ns=&to_ns=&complete=&limit=&offset=`: the cases the caller may
//!   see, newest first, filtered and paged (`limit` at most [`MAX_PAGE`]).
//! - `GET /v1/cases/{case}`: one case's summary.
//! - `GET /v1/cases/{case}/timeline`, `/accounting`, `/usage`: its timeline, the accounting of
//!   every camera, the per-tool usage.
//! - `GET /v1/cases/{case}/timeline.svg`: the timeline picture.
//!
//! A case the caller may not see answers 404, as an unknown one does, so its existence is not
//! told. Every read of a case is appended to the record's audit (`record_audit`, which
//! refuses updates and deletes) with who, when and what. A request without a valid token gets
//! 401 and nothing else, and is logged without its token. Bad parameters get 400 naming them.

pub mod access;
pub mod config;

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orstream_record::query::{self, CaseSummary};
use orstream_record::{Store, StoreError};
use orstream_sink::derive::StreamState;
use serde::Deserialize;
use serde_json::json;

use crate::access::{Principal, Tokens};

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../openapi.yaml");

/// Every route the router serves (all `GET`).
pub const ROUTES: &[&str] = &[
    "/v1/cases",
    "/v1/cases/{case}",
    "/v1/cases/{case}/timeline",
    "/v1/cases/{case}/accounting",
    "/v1/cases/{case}/usage",
    "/v1/cases/{case}/timeline.svg",
];

/// Largest page of cases.
pub const MAX_PAGE: usize = 500;
/// Page of cases when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// What the handlers share: the record and the tokens.
pub struct Api {
    store_url: String,
    /// Open connections to the record, taken one per request.
    pool: Mutex<Vec<Store>>,
    tokens: Tokens,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("store", &orstream_record::store::redact(&self.store_url))
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// An answer that is not the one asked for.
#[derive(Debug)]
pub enum ApiError {
    /// 401: no token, or not one of ours.
    Unauthorized,
    /// 400, naming the parameter and what is wrong.
    BadRequest(String),
    /// 404: no such case, or one the caller may not see.
    NotFound,
    /// 503: the record does not answer.
    Store(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is needed (Authorization: Bearer ...)".to_owned(),
            ),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            Self::NotFound => (StatusCode::NOT_FOUND, "no such case".to_owned()),
            Self::Store(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::Store(format!("the record does not answer: {error}"))
    }
}

impl Api {
    /// An API over the record at `store_url` for the holders of `tokens`.
    pub fn new(store_url: &str, tokens: Tokens) -> Self {
        Self {
            store_url: store_url.to_owned(),
            pool: Mutex::new(Vec::new()),
            tokens,
        }
    }

    /// The routes, ready to serve.
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/cases", get(cases))
            .route("/v1/cases/{case}", get(case))
            .route("/v1/cases/{case}/timeline", get(timeline))
            .route("/v1/cases/{case}/accounting", get(accounting))
            .route("/v1/cases/{case}/usage", get(usage))
            .route("/v1/cases/{case}/timeline.svg", get(picture))
            .with_state(Arc::new(self))
    }

    fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.tokens
            .principal(authorization)
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }

    /// Runs `work` on a connection of the pool, off the async threads.
    async fn with_store<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let api = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let taken = api
                .pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut store = match taken {
                Some(store) => store,
                None => Store::open(&api.store_url)?,
            };
            let result = work(&mut store);
            // A connection whose request failed on the store is not kept.
            if !matches!(result, Err(ApiError::Store(_))) {
                api.pool
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(store);
            }
            result
        })
        .await
        .map_err(|e| ApiError::Store(format!("the record's worker failed: {e}")))?
    }
}

/// The filters and page of `GET /v1/cases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFilter {
    room: Option<String>,
    from_ns: Option<i64>,
    to_ns: Option<i64>,
    complete: Option<bool>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn cases(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    filter: Result<Query<CaseFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = api.principal(&headers)?;
    let Query(filter) = filter.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    if let (Some(from), Some(to)) = (filter.from_ns, filter.to_ns)
        && from > to
    {
        return Err(ApiError::BadRequest(format!(
            "from_ns ({from}) is after to_ns ({to})"
        )));
    }
    let offset = filter.offset.unwrap_or(0);
    api.with_store(move |store| {
        let all = query::cases::<StreamState>(store)?;
        let chosen: Vec<CaseSummary> = all
            .into_iter()
            .filter(|c| principal.may_see(&c.room_id))
            .filter(|c| filter.room.as_ref().is_none_or(|r| *r == c.room_id))
            .filter(|c| {
                filter
                    .from_ns
                    .is_none_or(|from| c.last_frame_ns.max(c.started_ns) >= from)
            })
            .filter(|c| filter.to_ns.is_none_or(|to| c.started_ns <= to))
            .filter(|c| filter.complete.is_none_or(|want| c.complete == want))
            .collect();
        let total = chosen.len();
        let page: Vec<CaseSummary> = chosen.into_iter().skip(offset).take(limit).collect();
        Ok(Json(json!({
            "cases": page,
            "total": total,
            "offset": offset,
            "limit": limit,
        })))
    })
    .await
}

/// The summary of `case_id` when `principal` may see it; the read is audited.
fn visible_case(
    store: &mut Store,
    principal: &Principal,
    case_id: &str,
    what: &str,
) -> Result<CaseSummary, ApiError> {
    let summary = query::cases::<StreamState>(store)?
        .into_iter()
        .find(|c| c.case_id == case_id)
        .filter(|c| principal.may_see(&c.room_id))
        .ok_or(ApiError::NotFound)?;
    store.audit_read(
        orstream_shell::clock::now_ns(),
        &principal.name,
        what,
        case_id,
    )?;
    Ok(summary)
}

async fn case(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<CaseSummary>, ApiError> {
    let principal = api.principal(&headers)?;
    api.with_store(move |store| visible_case(store, &principal, &case_id, "read case").map(Json))
        .await
}

async fn timeline(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<query::Timeline>, ApiError> {
    let principal = api.principal(&headers)?;
    api.with_store(move |store| {
        visible_case(store, &principal, &case_id, "read timeline")?;
        query::timeline::<StreamState>(store, &case_id)?
            .map(Json)
            .ok_or(ApiError::NotFound)
    })
    .await
}

async fn accounting(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = api.principal(&headers)?;
    api.with_store(move |store| {
        let summary = visible_case(store, &principal, &case_id, "read accounting")?;
        let streams = query::accounting::<StreamState>(store, &case_id)?;
        Ok(Json(json!({
            "case_id": case_id,
            "complete": summary.complete,
            "streams": streams,
        })))
    })
    .await
}

async fn usage(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = api.principal(&headers)?;
    api.with_store(move |store| {
        visible_case(store, &principal, &case_id, "read usage")?;
        let timeline =
            query::timeline::<StreamState>(store, &case_id)?.ok_or(ApiError::NotFound)?;
        Ok(Json(json!({
            "case_id": case_id,
            "usage": query::usage(&timeline),
            "motion": query::motion(&timeline),
        })))
    })
    .await
}

async fn picture(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = api.principal(&headers)?;
    let svg = api
        .with_store(move |store| {
            visible_case(store, &principal, &case_id, "read timeline picture")?;
            let timeline =
                query::timeline::<StreamState>(store, &case_id)?.ok_or(ApiError::NotFound)?;
            Ok(orstream_record::svg::svg(&timeline))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}
