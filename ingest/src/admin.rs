//! The admin API: the [`Controller`]'s operations over HTTP + JSON, described in
//! `ingest/openapi.yaml` (also served at `GET /v1/openapi.yaml`).
//!
//! - `GET /v1/status`: rooms, open cases, cameras.
//! - `POST /v1/rooms/{room}/case` `{"case_id": "..."}`: start a case (201).
//! - `DELETE /v1/rooms/{room}/case`: end the room's case.
//! - `POST /v1/rooms/{room}/cameras` `{"name": "...", "uri": "..."}` (or `"source": {...}`,
//!   with optional `"mode"` and `"output"`): add a camera once it gives a frame (201).
//! - `DELETE /v1/rooms/{room}/cameras/{name}`: remove a camera.
//!
//! Every request but the description's needs `Authorization: Bearer <token>`, a token of
//! the tokens' file ([`Tokens`]); the token's name is who the audit log names. Every change,
//! refused or done, is logged on the `orstream::audit` target with who, from where, what,
//! when and the outcome; a camera's location never is (it may hold credentials). Errors are
//! `{"error": "..."}` naming what was wrong: 400 a bad request, 401 no or an unknown token,
//! 404 an unknown room or camera, 409 a conflict with the site's state (a case open, a name
//! taken), 413 a body over 64 KiB, 422 a camera that cannot be opened, 503 the bus did not
//! take the case's event or ingest is stopping.
//!
//! Requests are served on their own threads (at most [`MAX_IN_FLIGHT`] at once), so a camera
//! being checked does not hold up the status.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_json::json;

use crate::config::{FullPolicy, OutputConfig, SourceConfig, StreamConfig};
use crate::control::{ControlError, Controller};
use crate::error::IngestError;
use crate::site::SiteError;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../openapi.yaml");
/// Largest request body taken.
pub const MAX_BODY: usize = 64 * 1024;
/// Requests served at once; more are answered 503.
pub const MAX_IN_FLIGHT: usize = 16;
pub use orstream_shell::tokens::MIN_TOKEN_LEN;

/// The API's tokens, each with the name the audit log gives who used it.
#[derive(Clone)]
pub struct Tokens(Vec<(String, String)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_tuple("Tokens").field(&names).finish()
    }
}

impl Tokens {
    /// Parses a tokens' file: one `NAME TOKEN` per line, or a single token alone (named
    /// `admin`); blank lines and `#` comments skipped. Errors name the line, never the token.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
            .collect();
        let alone = lines.len() == 1 && !lines[0].1.contains(char::is_whitespace);
        for (number, line) in lines {
            let (name, token) = if alone {
                ("admin", line)
            } else {
                let mut parts = line.split_whitespace();
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(name), Some(token), None) => (name, token),
                    _ => return Err(format!("line {number}: expected `NAME TOKEN`")),
                }
            };
            if crate::site::check_name("token name", name).is_err() {
                return Err(format!(
                    "line {number}: the name must be 1 to 64 of A-Z a-z 0-9 _ -"
                ));
            }
            orstream_shell::tokens::check(number, token)?;
            if tokens.iter().any(|(n, _)| n == name) {
                return Err(format!("line {number}: the name {name} is used twice"));
            }
            tokens.push((name.to_owned(), token.to_owned()));
        }
        if tokens.is_empty() {
            return Err("no token".to_owned());
        }
        Ok(Self(tokens))
    }

    /// Reads and parses the tokens' file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        orstream_shell::tokens::read(path, Self::parse)
    }

    /// The token named `name`, or the first one.
    pub fn token(&self, name: Option<&str>) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| name.is_none_or(|name| n == name))
            .map(|(_, token)| token.as_str())
    }

    /// The name of the token in an `Authorization` header's value, if it is one of ours.
    /// Every token is compared in full, in time that does not depend on where they differ.
    pub fn who(&self, authorization: Option<&str>) -> Option<&str> {
        orstream_shell::tokens::holder(
            authorization,
            self.0.iter().map(|(n, t)| (n.as_str(), t.as_str())),
        )
    }
}

/// A running admin API; stops when dropped.
#[derive(Debug)]
pub struct AdminServer(orstream_shell::http::Endpoint);

impl AdminServer {
    /// Reads the tokens, binds `listen` (port 0 picks a free one) and serves `controller`.
    pub(crate) fn start(
        listen: SocketAddr,
        token_file: &Path,
        controller: Arc<Controller>,
    ) -> Result<Self, IngestError> {
        let tokens = Arc::new(Tokens::read(token_file).map_err(IngestError::Admin)?);
        let endpoint = orstream_shell::http::Endpoint::start(
            "admin API",
            listen,
            "ingest-admin",
            move |http| {
                serve(http, &tokens, &controller);
            },
        )
        .map_err(IngestError::Admin)?;
        tracing::info!(addr = %endpoint.local_addr(), "admin API serving");
        Ok(Self(endpoint))
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }
}

fn serve(http: &tiny_http::Server, tokens: &Arc<Tokens>, controller: &Arc<Controller>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    for request in http.incoming_requests() {
        if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            respond(
                request,
                &Answer::error(503, "too many admin requests at once"),
            );
            continue;
        }
        let tokens = Arc::clone(tokens);
        let controller = Arc::clone(controller);
        let done = Arc::clone(&in_flight);
        let spawned = std::thread::Builder::new()
            .name("ingest-admin-request".into())
            .spawn(move || {
                handle(request, &tokens, &controller);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(error) = spawned {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(%error, "cannot start a thread for an admin request");
        }
    }
}

/// A response: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: serde_json::Value,
    /// For the description: YAML text instead of JSON.
    pub(crate) yaml: Option<&'static str>,
    /// For the audit log, what was wrong: a fixed phrase, never the request's values (the
    /// error's text may hold a case id, which no log carries).
    pub(crate) audit: &'static str,
}

impl Answer {
    fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            body,
            yaml: None,
            audit: "",
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self::refusal(status, message, "bad request")
    }

    fn refusal(status: u16, message: impl Into<String>, audit: &'static str) -> Self {
        Self {
            audit,
            ..Self::json(status, json!({ "error": message.into() }))
        }
    }

    fn done<T: serde::Serialize>(status: u16, value: Result<T, ControlError>) -> Self {
        match value {
            Ok(value) => Self::json(
                status,
                serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            ),
            Err(error) => Self::refusal(
                error_status(&error),
                error.to_string(),
                audit_reason(&error),
            ),
        }
    }
}

fn error_status(error: &ControlError) -> u16 {
    match error {
        ControlError::Site(site) => match site {
            SiteError::BadName { .. } => 400,
            SiteError::UnknownRoom(_) | SiteError::UnknownCamera { .. } => 404,
            SiteError::RoomExists(_)
            | SiteError::CameraExists { .. }
            | SiteError::TooManyCameras { .. }
            | SiteError::CaseOpen { .. }
            | SiteError::CaseElsewhere { .. }
            | SiteError::NoOpenCase(_) => 409,
        },
        ControlError::BadCamera { .. } => 400,
        ControlError::CameraUnusable { .. } => 422,
        ControlError::Bus { .. } | ControlError::Stopping => 503,
        ControlError::Ingest(_) => 500,
    }
}

/// What was wrong, for the audit log.
fn audit_reason(error: &ControlError) -> &'static str {
    match error {
        ControlError::Site(site) => match site {
            SiteError::BadName { .. } => "a name or case id breaks the rules",
            SiteError::UnknownRoom(_) => "unknown room",
            SiteError::UnknownCamera { .. } => "unknown camera",
            SiteError::RoomExists(_) => "room exists",
            SiteError::CameraExists { .. } => "camera exists",
            SiteError::TooManyCameras { .. } => "room full",
            SiteError::CaseOpen { .. } => "a case is open in the room",
            SiteError::CaseElsewhere { .. } => "the case is open in another room",
            SiteError::NoOpenCase(_) => "no open case",
        },
        ControlError::BadCamera { .. } => "camera settings break the rules",
        ControlError::CameraUnusable { .. } => "camera cannot be opened",
        ControlError::Bus { .. } => "the bus did not take it",
        ControlError::Stopping => "ingest is stopping",
        ControlError::Ingest(_) => "internal error",
    }
}

fn respond(request: tiny_http::Request, answer: &Answer) {
    let (text, content_type) = match answer.yaml {
        Some(yaml) => (yaml.to_owned(), "application/yaml"),
        None => (format!("{}\n", answer.body), "application/json"),
    };
    let mut response = tiny_http::Response::from_string(text).with_status_code(answer.status);
    for (name, value) in [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
    ] {
        if let Ok(header) = tiny_http::Header::from_bytes(name, value) {
            response.add_header(header);
        }
    }
    if let Err(error) = request.respond(response) {
        tracing::debug!(%error, "answering an admin request");
    }
}

fn handle(mut request: tiny_http::Request, tokens: &Tokens, controller: &Controller) {
    let from = request
        .remote_addr()
        .map_or_else(|| "unknown".to_owned(), ToString::to_string);
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    let answer = if read.is_err() {
        Answer::error(400, "the request body could not be read")
    } else if body.len() > MAX_BODY {
        Answer::error(413, format!("the request body is over {MAX_BODY} bytes"))
    } else {
        let who = tokens.who(authorization.as_deref());
        answer(&method, &path, &body, who, &from, controller)
    };
    respond(request, &answer);
}

/// A case to start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    case_id: String,
}

/// A camera to add: `uri` (as `--stream ID=URI` takes it) or a full `source` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CameraRequest {
    name: String,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    source: Option<SourceConfig>,
    #[serde(default)]
    mode: FullPolicy,
    #[serde(default)]
    output: Option<OutputConfig>,
}

impl CameraRequest {
    fn stream(self) -> Result<StreamConfig, String> {
        let source = match (self.uri, self.source) {
            (Some(uri), None) => SourceConfig::from_uri(&uri).map_err(|e| format!("uri: {e}"))?,
            (None, Some(source)) => source,
            _ => return Err("give one of uri and source".to_owned()),
        };
        let mut stream = StreamConfig::new(self.name, source);
        stream.full_policy = self.mode;
        if let Some(output) = self.output {
            stream.output = output;
        }
        Ok(stream)
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| {
        Answer::error(
            400,
            format!("the request body is not what is expected: {e}"),
        )
    })
}

/// The answer to one request; changes are written to the audit log.
pub(crate) fn answer(
    method: &str,
    path: &str,
    body: &[u8],
    who: Option<&str>,
    from: &str,
    controller: &Controller,
) -> Answer {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == "GET" && segments == ["v1", "openapi.yaml"] {
        return Answer {
            yaml: Some(OPENAPI),
            ..Answer::json(200, serde_json::Value::Null)
        };
    }
    let change = method != "GET";
    let Some(who) = who else {
        if change {
            tracing::warn!(target: "orstream::audit", from, method, path,
                outcome = 401, "admin change refused: no valid token");
        }
        return Answer::error(
            401,
            "a valid bearer token is needed (Authorization: Bearer ...)",
        );
    };
    let (action, answer) = match (method, segments.as_slice()) {
        ("GET", ["v1", "status"]) => {
            return Answer::json(200, json!({ "rooms": controller.status() }));
        }
        ("POST", ["v1", "rooms", room, "case"]) => match parse::<CaseRequest>(body) {
            // Never the case id in the log: the room and the time name the case.
            Ok(request) => (
                format!("case start in {room}"),
                Answer::done(201, controller.start_case(room, &request.case_id)),
            ),
            Err(answer) => (format!("case start in {room}"), answer),
        },
        ("DELETE", ["v1", "rooms", room, "case"]) => (
            format!("case end in {room}"),
            Answer::done(200, controller.end_case(room)),
        ),
        ("POST", ["v1", "rooms", room, "cameras"]) => match parse::<CameraRequest>(body) {
            Ok(request) => {
                let action = format!("camera add {} in {room}", escape(&request.name));
                match request.stream() {
                    Ok(stream) => (
                        action,
                        Answer::done(201, controller.add_camera(room, stream)),
                    ),
                    Err(problem) => (action, Answer::error(400, problem)),
                }
            }
            Err(answer) => (format!("camera add in {room}"), answer),
        },
        ("DELETE", ["v1", "rooms", room, "cameras", name]) => (
            format!("camera remove {name} in {room}"),
            Answer::done(200, controller.remove_camera(room, name)),
        ),
        _ => return Answer::error(404, format!("no such operation: {method} {path}")),
    };
    let action = escape(&action);
    if answer.status < 300 {
        tracing::info!(target: "orstream::audit", who, from, action = %action,
            at_ns = orstream_shell::clock::now_ns(), outcome = answer.status, "admin change");
    } else {
        tracing::warn!(target: "orstream::audit", who, from, action = %action,
            at_ns = orstream_shell::clock::now_ns(), outcome = answer.status,
            reason = answer.audit, "admin change refused");
    }
    answer
}

/// Text from a request, made safe for one log line (control characters escaped, bounded).
fn escape(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(char::escape_default)
        .take(256)
        .collect();
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_named_and_checked_without_being_repeated() {
        let alone = Tokens::parse("0123456789abcdef0123\n").unwrap();
        assert_eq!(
            alone.who(Some("Bearer 0123456789abcdef0123")),
            Some("admin")
        );
        let named =
            Tokens::parse("# staff\nscheduler s3cr3t-s3cr3t-s3cr3t\nnurse n0rs3-n0rs3-n0rs3-1\n")
                .unwrap();
        assert_eq!(named.who(Some("Bearer n0rs3-n0rs3-n0rs3-1")), Some("nurse"));
        assert_eq!(named.who(Some("Bearer n0rs3-n0rs3-n0rs3-2")), None);
        assert_eq!(named.who(Some("n0rs3-n0rs3-n0rs3-1")), None);
        assert_eq!(named.who(None), None);
        assert_eq!(named.token(Some("scheduler")), Some("s3cr3t-s3cr3t-s3cr3t"));
        assert_eq!(named.token(None), Some("s3cr3t-s3cr3t-s3cr3t"));
        assert!(!format!("{named:?}").contains("s3cr3t"));
        for (text, problem) in [
            ("", "no token"),
            ("short", "at least 16"),
            ("a b c\n", "line 1: expected"),
            ("x/y 0123456789abcdef0123\n", "line 1: the name"),
            (
                "a 0123456789abcdef0123\na 0123456789abcdef0124\n",
                "used twice",
            ),
            ("a 0123456789abcdef\u{7}0123\n", "printable"),
        ] {
            let error = Tokens::parse(text).unwrap_err();
            assert!(error.contains(problem), "{text:?}: {error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
        }
    }
}
