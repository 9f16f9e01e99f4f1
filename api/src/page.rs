//! The web page: the list of rooms and cases and, for a case, its timeline picture growing
//! live, its events and its accounting, with a clear mark where the record is incomplete.
//!
//! Plain HTML, CSS and JavaScript with nothing to build, embedded in the binary
//! (`api/page/`). The page holds no data of its own: it asks for a token (kept in the tab's
//! session storage, sent as `Authorization: Bearer`, never in a URL) and reads everything
//! through the API, so what a reader may not see is never sent to it. The live feed is read
//! with `fetch` as a stream, since `EventSource` cannot send the token.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Api;

/// The page.
pub const INDEX: &str = include_str!("../page/index.html");
/// Its script.
pub const SCRIPT: &str = include_str!("../page/app.js");
/// Its style.
pub const STYLE: &str = include_str!("../page/app.css");

/// The page's paths (no token needed: they hold no data).
pub const PATHS: &[&str] = &["/", "/app.js", "/app.css"];

/// Every asset is answered with a policy that lets it load only itself and talk only to the
/// API it came from.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      img-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; \
                      base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The page's routes.
pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}
