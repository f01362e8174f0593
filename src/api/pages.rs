//! The people's pages: the Vue app built from `web/` and embedded in the binary (see
//! `build.rs`). `/checkout/…`, `/portal…` and `/console…` (and `/`) answer the app's
//! `index.html`, which routes in the browser; `/assets/…` answer the built files. Nothing is
//! fetched from another host: the content security policy allows this origin only.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Pages may load only what this origin serves; inline styles are Element Plus's.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'self'; form-action 'self'";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/checkout/{*rest}", get(app))
        .route("/portal", get(app))
        .route("/portal/{*rest}", get(app))
        .route("/console", get(app))
        .route("/console/{*rest}", get(app))
        .route("/assets/{*path}", get(asset))
        .route("/favicon.svg", get(|| async { file("favicon.svg") }))
}

async fn app() -> Response {
    file("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    file(&format!("assets/{path}"))
}

/// The embedded file at `path`, or a plain 404.
pub fn file(path: &str) -> Response {
    let Some((_, bytes)) = WEB_ASSETS.iter().find(|(p, _)| *p == path) else {
        return not_built_or_missing(path);
    };
    let mut r = (StatusCode::OK, *bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    // Built assets carry a content hash in their names: cache them for good. The page itself
    // must be asked again so a new build is picked up.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn not_built_or_missing(path: &str) -> Response {
    if WEB_ASSETS.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            "The web pages were not built into this binary (LEDGER_SKIP_WEB_BUILD=1). \
             Rebuild with Node.js 20+ and npm installed.",
        )
            .into_response();
    }
    tracing::debug!(path, "no such asset");
    (StatusCode::NOT_FOUND, "Not found").into_response()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "json" => "application/json",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_pages_are_embedded_with_their_index() {
        assert!(
            WEB_ASSETS.iter().any(|(p, _)| *p == "index.html"),
            "web/dist/index.html is embedded"
        );
        assert!(WEB_ASSETS.iter().any(|(p, _)| p.starts_with("assets/")));
    }
}
