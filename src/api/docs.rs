//! `/docs`, the API's page for people, and `/api/v1/openapi.json`, the document it shows. Both
//! unsigned (SPEC §11). The page is Swagger UI from the vendored assets of utoipa-swagger-ui
//! (nothing is fetched from another host) with a key id and secret box and a request
//! interceptor that signs each "Try it out" request in the browser (`docs/signing.js`, the
//! same string to sign as `crate::signing`). The secret stays in the page's memory.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The page's own files.
const INDEX_HTML: &str = include_str!("docs/index.html");
const SIGNING_JS: &str = include_str!("docs/signing.js");
const DOCS_CSS: &str = include_str!("docs/docs.css");

/// Scripts and styles from this origin only; Swagger UI sets inline styles.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'self'; form-action 'self'";

/// The vendored Swagger UI files the page loads.
const SWAGGER_FILES: [&str; 4] = [
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "favicon-32x32.png",
];

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/docs", get(index))
        .route("/docs/", get(index))
        .route("/docs/{file}", get(file))
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    summary = "This document",
    description = "The OpenAPI 3.1 document of this service (its limits and whether the sandbox runs are this node's). Not the envelope.",
    responses((status = 200, description = "the document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json(State(state): State<Arc<AppState>>) -> Response {
    let doc = super::openapi::document(&state.settings);
    let mut r = super::envelope::json_response(StatusCode::OK, &doc);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    page(INDEX_HTML.as_bytes().to_vec(), "text/html; charset=utf-8")
}

async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "ledger-signing.js" => page(
            SIGNING_JS.as_bytes().to_vec(),
            "text/javascript; charset=utf-8",
        ),
        "ledger-docs.css" => page(DOCS_CSS.as_bytes().to_vec(), "text/css; charset=utf-8"),
        other if SWAGGER_FILES.contains(&other) => {
            let config = Arc::new(utoipa_swagger_ui::Config::from("/api/v1/openapi.json"));
            match utoipa_swagger_ui::serve(other, config) {
                Ok(Some(f)) => page(f.bytes.to_vec(), &f.content_type),
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found").into_response()
}

fn page(bytes: Vec<u8>, content_type: &str) -> Response {
    let mut r = (StatusCode::OK, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
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
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_the_credential_box_and_loads_the_signing_interceptor() {
        for id in [
            "ledger-key-id",
            "ledger-secret",
            "ledger-forget",
            "ledger-signing-state",
        ] {
            assert!(INDEX_HTML.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(INDEX_HTML.contains("/docs/ledger-signing.js"));
        assert!(INDEX_HTML.contains("ledger api"));
        assert!(SIGNING_JS.contains("requestInterceptor"));
        // The secret is read from the input at each request, never kept by the browser.
        for storage in ["localStorage", "sessionStorage", "document.cookie"] {
            assert!(!SIGNING_JS.contains(storage), "{storage}");
        }
    }

    #[test]
    fn the_vendored_swagger_ui_files_are_there() {
        let config = Arc::new(utoipa_swagger_ui::Config::from("/api/v1/openapi.json"));
        for f in SWAGGER_FILES {
            assert!(
                utoipa_swagger_ui::serve(f, config.clone())
                    .ok()
                    .flatten()
                    .is_some(),
                "{f}"
            );
        }
    }
}
