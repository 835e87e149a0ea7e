//! The console's stylesheet and script, compiled into the binary (no CDN, no file read at
//! run time) and served without authentication (they hold no data). The script is the
//! console's own, small and readable: `assets/console.js`.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Shared;

/// The stylesheet.
pub(crate) const CSS: &str = include_str!("assets/console.css");
/// The live-refresh script.
pub(crate) const JS: &str = include_str!("assets/console.js");

/// `/assets/console.css` and `/assets/console.js`.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/assets/console.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/assets/console.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // An hour: a new release's assets show within one (the URLs carry no version).
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}
