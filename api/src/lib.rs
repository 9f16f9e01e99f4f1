//! orstream-api: the surgical record over a read-only, authenticated HTTP + JSON API.
//!
//! Routes (every one needs `Authorization: Bearer <token>`, see [`access`]):
//! - `GET /v1/cases?room=&from_ns=&to_ns=&complete=&limit=&offset=`: the cases the caller may
//!   see, newest first, filtered and paged (`limit` at most [`MAX_PAGE`]).
//! - `GET /v1/cases/{case}`: one case's summary.
//! - `GET /v1/cases/{case}/timeline`, `/accounting`, `/usage`: its timeline, the accounting of
//!   every camera, the per-tool usage.
//! - `GET /v1/cases/{case}/timeline.svg`: the timeline picture.
//! - `GET /v1/cases/{case}/tracks`: its tool tracks and each tool's motion.
//! - `GET /v1/rooms`: the rooms the caller may see, each with its cases and its open case.
//! - `GET /v1/live?case=`: what happens, as it happens (server-sent events, [`live`]).
//! - `GET /`: the web page ([`page`]), which asks for a token and then uses the routes above.
//!
//! Each caller may make [`config::ApiConfig::rate_per_second`] requests a second (429 with
//! `Retry-After` beyond, [`limit`]).
//!
//! A case the caller may not see answers 404, as an unknown one does, so its existence is not
//! told. Every read of a case is appended to the record's audit (`record_audit`, which
//! refuses updates and deletes) with who, when and what. A request without a valid token gets
//! 401 and nothing else, and is logged without its token. Bad parameters get 400 naming them.

pub mod access;
pub mod config;
pub mod limit;
pub mod live;
pub mod page;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use orstream_record::query::{self, CaseSummary};
use orstream_record::{Store, StoreError};
use orstream_sink::derive::StreamState;
use serde::Deserialize;
use serde_json::json;

use tokio_util::sync::CancellationToken;

use crate::access::{Principal, Tokens};
use crate::limit::Limiter;
use crate::live::Live;

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
    "/v1/cases/{case}/tracks",
    "/v1/rooms",
    "/v1/live",
];

/// Largest page of cases.
pub const MAX_PAGE: usize = 500;
/// Page of cases when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// What the handlers share: the record, the tokens, the rate limit and the live feed.
pub struct Api {
    store_url: String,
    /// Open connections to the record, taken one per request.
    pool: Mutex<Vec<Store>>,
    tokens: Tokens,
    limiter: Limiter,
    live: Live,
    /// Ends the live feeds (a graceful stop waits for every open response).
    stop: CancellationToken,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("store", &orstream_record::store::redact(&self.store_url))
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl Drop for Api {
    /// The pooled connections are closed on a thread of their own: the PostgreSQL client
    /// blocks on a runtime of its own when it closes, which it may not do on the server's
    /// (the last handle to the API is dropped there when serving ends).
    fn drop(&mut self) {
        let stores = std::mem::take(self.pool.get_mut().unwrap_or_else(PoisonError::into_inner));
        if !stores.is_empty() {
            let _ = std::thread::spawn(move || drop(stores)).join();
        }
    }
}

/// An answer that is not the one asked for.
#[derive(Debug)]
pub enum ApiError {
    /// 401: no token, or not one of ours.
    Unauthorized,
    /// 429: too many requests; ask again after this long.
    TooMany(Duration),
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
            Self::TooMany(wait) => {
                let seconds = wait.as_secs() + 1;
                let body = json!({
                    "error": format!("too many requests: ask again in {seconds} s")
                });
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, seconds.to_string())],
                    Json(body),
                )
                    .into_response();
            }
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
    /// An API over the record at `store_url` for the holders of `tokens`, with the default
    /// rate limit and a live feed nothing publishes into until [`with_live`](Self::with_live).
    pub fn new(store_url: &str, tokens: Tokens) -> Self {
        let defaults = config::ApiConfig::default();
        Self {
            store_url: store_url.to_owned(),
            pool: Mutex::new(Vec::new()),
            tokens,
            limiter: Limiter::new(defaults.rate_per_second, defaults.burst),
            live: Live::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Ends every `/v1/live` response when `stop` is cancelled, so that a graceful stop
    /// does not wait for clients that never hang up.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// The rate limit: `per_second` requests a second per caller, `burst` at once.
    pub fn with_rate(mut self, per_second: u32, burst: u32) -> Self {
        self.limiter = Limiter::new(per_second, burst);
        self
    }

    /// The live feed `/v1/live` passes on (see [`Live::follow`]).
    pub fn with_live(mut self, live: Live) -> Self {
        self.live = live;
        self
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
            .route("/v1/cases/{case}/tracks", get(tracks))
            .route("/v1/rooms", get(rooms))
            .route("/v1/live", get(live_feed))
            .merge(page::router())
            .with_state(Arc::new(self))
    }

    /// The caller: rate-limited (by token name; every request without a valid token shares
    /// one bucket), then 401 without a valid token.
    fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = self.tokens.principal(authorization);
        let caller = principal.map_or(" unauthenticated", |p| p.name.as_str());
        self.limiter.take(caller).map_err(ApiError::TooMany)?;
        principal.cloned().ok_or(ApiError::Unauthorized)
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
    check_id("room", filter.room.as_deref())?;
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
        // Cheap filters first; completeness (an accounting read per case) only for the cases
        // that need it: all candidates when filtering on it, else the page shown.
        let mut chosen: Vec<CaseSummary> = query::case_list(store)?
            .into_iter()
            .filter(|c| principal.may_see(&c.room_id))
            .filter(|c| filter.room.as_ref().is_none_or(|r| *r == c.room_id))
            .filter(|c| {
                filter
                    .from_ns
                    .is_none_or(|from| c.last_frame_ns.max(c.started_ns) >= from)
            })
            .filter(|c| filter.to_ns.is_none_or(|to| c.started_ns <= to))
            .collect();
        if let Some(want) = filter.complete {
            for case in &mut chosen {
                query::settle::<StreamState>(store, case)?;
            }
            chosen.retain(|c| c.complete == want);
        }
        let total = chosen.len();
        let mut page: Vec<CaseSummary> = chosen.into_iter().skip(offset).take(limit).collect();
        if filter.complete.is_none() {
            for case in &mut page {
                query::settle::<StreamState>(store, case)?;
            }
        }
        Ok(Json(json!({
            "cases": page,
            "total": total,
            "offset": offset,
            "limit": limit,
        })))
    })
    .await
}

/// A query parameter naming a room or a case: a usable id of the contract (non-empty, capped
/// in length, no control characters), or 400 naming the parameter.
fn check_id(parameter: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(value) if !orstream_proto::wire::is_valid_id(value) => Err(ApiError::BadRequest(
            format!("{parameter}: not a usable id (empty, too long or with control characters)"),
        )),
        _ => Ok(()),
    }
}

/// The summary of `case_id` when `principal` may see it; the read is audited.
fn visible_case(
    store: &mut Store,
    principal: &Principal,
    case_id: &str,
    what: &str,
) -> Result<CaseSummary, ApiError> {
    let summary = query::case::<StreamState>(store, case_id)?
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

/// Answers with `answer` for a case the caller may see (404 otherwise), its read audited as
/// `what`; `answer` gets the record, the case's summary and its id.
async fn read_case<T: Send + 'static>(
    api: &Arc<Api>,
    headers: &HeaderMap,
    case_id: String,
    what: &'static str,
    answer: impl FnOnce(&mut Store, CaseSummary, &str) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let principal = api.principal(headers)?;
    api.with_store(move |store| {
        let summary = visible_case(store, &principal, &case_id, what)?;
        answer(store, summary, &case_id)
    })
    .await
}

fn timeline_of(store: &mut Store, case_id: &str) -> Result<query::Timeline, ApiError> {
    query::timeline::<StreamState>(store, case_id)?.ok_or(ApiError::NotFound)
}

async fn case(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<CaseSummary>, ApiError> {
    read_case(&api, &headers, case_id, "read case", |_, summary, _| {
        Ok(Json(summary))
    })
    .await
}

async fn timeline(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<query::Timeline>, ApiError> {
    read_case(&api, &headers, case_id, "read timeline", |store, _, id| {
        timeline_of(store, id).map(Json)
    })
    .await
}

async fn accounting(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    read_case(
        &api,
        &headers,
        case_id,
        "read accounting",
        |store, summary, id| {
            let streams = query::accounting::<StreamState>(store, id)?;
            Ok(Json(json!({
                "case_id": id,
                "complete": summary.complete,
                "streams": streams,
            })))
        },
    )
    .await
}

async fn usage(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    read_case(&api, &headers, case_id, "read usage", |store, _, id| {
        let timeline = timeline_of(store, id)?;
        Ok(Json(json!({
            "case_id": id,
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
    let svg = read_case(
        &api,
        &headers,
        case_id,
        "read timeline picture",
        |store, _, id| Ok(orstream_record::svg::svg(&timeline_of(store, id)?)),
    )
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn tracks(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(case_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    read_case(&api, &headers, case_id, "read tracks", |store, _, id| {
        let timeline = timeline_of(store, id)?;
        Ok(Json(json!({
            "case_id": id,
            "motion": query::motion(&timeline),
            "tracks": timeline.tracks,
        })))
    })
    .await
}

/// A room as `/v1/rooms` lists it.
#[derive(Debug, serde::Serialize)]
struct Room {
    room_id: String,
    cases: u64,
    open_case: Option<String>,
    last_started_ns: i64,
}

async fn rooms(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = api.principal(&headers)?;
    api.with_store(move |store| {
        let mut rooms: std::collections::BTreeMap<String, Room> = Default::default();
        for case in query::case_list(store)? {
            if case.room_id.is_empty() || !principal.may_see(&case.room_id) {
                continue;
            }
            let room = rooms.entry(case.room_id.clone()).or_insert_with(|| Room {
                room_id: case.room_id.clone(),
                cases: 0,
                open_case: None,
                last_started_ns: case.started_ns,
            });
            room.cases += 1;
            room.last_started_ns = room.last_started_ns.max(case.started_ns);
            if case.closed_ns.is_none() && room.open_case.is_none() {
                room.open_case = Some(case.case_id.clone());
            }
        }
        Ok(Json(
            json!({ "rooms": rooms.into_values().collect::<Vec<_>>() }),
        ))
    })
    .await
}

/// The filter of `GET /v1/live`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveFilter {
    case: Option<String>,
}

/// Server-sent events: each notice of a room the caller may see (and of `case`, when given),
/// as `event: record` or `event: case` with the notice as JSON; `event: lagged` when this
/// listener fell behind and missed some (fetch the case again); a comment every 15 s keeps
/// idle connections open through proxies.
async fn live_feed(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    filter: Result<Query<LiveFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let principal = api.principal(&headers)?;
    let Query(filter) = filter.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    check_id("case", filter.case.as_deref())?;
    // Following is a read of the record as it is written: audited once per connection, for
    // its case or for every room the caller may see (`*`).
    let (actor, case) = (
        principal.name.clone(),
        filter.case.clone().unwrap_or_else(|| "*".to_owned()),
    );
    api.with_store(move |store| {
        store
            .audit_read(
                orstream_shell::clock::now_ns(),
                &actor,
                "follow live",
                &case,
            )
            .map_err(ApiError::from)
    })
    .await?;
    let receiver = api.live.subscribe();
    let stop = api.stop.clone();
    let stream = futures::stream::unfold(receiver, move |mut receiver| {
        let principal = principal.clone();
        let case = filter.case.clone();
        let stop = stop.clone();
        async move {
            loop {
                let received = tokio::select! {
                    () = stop.cancelled() => return None,
                    received = receiver.recv() => received,
                };
                let event = match received {
                    Ok(notice) => {
                        let wanted = principal.may_see(&notice.room_id)
                            && case.as_ref().is_none_or(|c| *c == notice.case_id);
                        if !wanted {
                            continue;
                        }
                        Event::default()
                            .event(notice.name)
                            .json_data(&notice.data)
                            .unwrap_or_else(|_| Event::default().event("lagged").data("{}"))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        Event::default()
                            .event("lagged")
                            .data(json!({ "missed": missed }).to_string())
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                return Some((Ok::<_, Infallible>(event), receiver));
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
