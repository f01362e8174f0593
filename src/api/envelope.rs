//! The `{code, message, data}` envelope, the request language, and the position header.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// Header on every GET: the log position the read models include.
pub const POSITION_HEADER: &str = "x-ledger-position";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

tokio::task_local! {
    static LANG: Lang;
}

/// The language of the request being served (set by the language middleware).
pub fn lang() -> Lang {
    LANG.try_with(|l| *l).unwrap_or(Lang::En)
}

/// Runs `f` with the request's language in scope.
pub async fn with_lang<F: std::future::Future>(lang: Lang, f: F) -> F::Output {
    LANG.scope(lang, f).await
}

/// Any tag whose primary subtag is `zh` (`zh`, `zh-CN`, `zh-CN,zh;q=0.9`) gets Chinese; the
/// first listed language decides.
pub fn parse_accept_language(headers: &HeaderMap) -> Lang {
    let Some(value) = headers.get("accept-language").and_then(|v| v.to_str().ok()) else {
        return Lang::En;
    };
    let first = value
        .split(',')
        .next()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    let primary = first.split(['-', '_']).next().unwrap_or("");
    if primary.eq_ignore_ascii_case("zh") {
        Lang::Zh
    } else {
        Lang::En
    }
}

pub fn success_message(lang: Lang) -> &'static str {
    match lang {
        Lang::En => "success",
        Lang::Zh => "成功",
    }
}

/// The success envelope around already-serialised data.
pub fn ok_body<T: Serialize>(data: &T) -> Value {
    serde_json::json!({ "code": 0, "message": success_message(lang()), "data": data })
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("json values serialize");
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// A successful read, with the position header.
pub fn ok_read<T: Serialize>(position: i64, data: &T) -> Response {
    let body = Envelope {
        code: 0,
        message: success_message(lang()),
        data,
    };
    let bytes = serde_json::to_vec(&body).expect("views serialize");
    let mut response = (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    response
        .headers_mut()
        .insert(POSITION_HEADER, HeaderValue::from(position));
    response
}

/// A successful read whose `data` is already serialised JSON (a cached answer): the envelope
/// is written around the bytes, nothing is serialised again.
pub fn ok_read_json(position: i64, data: &[u8]) -> Response {
    let message = success_message(lang());
    let mut body = Vec::with_capacity(data.len() + 48);
    body.extend_from_slice(br#"{"code":0,"message":""#);
    body.extend_from_slice(message.as_bytes());
    body.extend_from_slice(br#"","data":"#);
    body.extend_from_slice(data);
    body.push(b'}');
    let mut response = (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(POSITION_HEADER, HeaderValue::from(position));
    response
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    code: u32,
    message: &'a str,
    data: &'a T,
}
