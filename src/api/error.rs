//! `ApiError`: the one place HTTP statuses and error codes are chosen (SPEC §5 error table),
//! rendered in the `{code, message, data}` envelope, in English or Chinese.
//!
//! Internal causes are logged with the request, never echoed to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::envelope::{self, Lang};
use crate::domain::DomainError;
use crate::service::CommandError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Replay(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("order already has a live payment")]
    LivePaymentExists { payment_id: uuid::Uuid },
    #[error("{0}")]
    RefundExceeds(String),
    #[error("idempotency key reused with a different body")]
    IdempotencyMismatch,
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Too many requests of this kind right now; the client may retry after the given time.
    #[error("{message}")]
    TooMany {
        message: String,
        retry_after_secs: u64,
    },
    /// The cause is for the log only: the client is told to try again, nothing more.
    #[error("service temporarily unavailable; try again shortly")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::Replay(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotAllowed(_)
            | ApiError::LivePaymentExists { .. }
            | ApiError::RefundExceeds(_)
            | ApiError::IdempotencyMismatch => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> u32 {
        match self {
            ApiError::BadRequest(_) => 40001,
            ApiError::Unauthorized(_) => 40101,
            ApiError::Replay(_) => 40102,
            ApiError::Forbidden(_) => 40301,
            ApiError::NotFound(_) => 40401,
            ApiError::MethodNotAllowed(_) => 40501,
            ApiError::NotAllowed(_) | ApiError::LivePaymentExists { .. } => 40901,
            ApiError::RefundExceeds(_) => 40902,
            ApiError::IdempotencyMismatch => 40903,
            ApiError::TooLarge(_) => 41301,
            ApiError::TooMany { .. } => 42901,
            ApiError::Internal(_) => 50001,
            ApiError::Unavailable(_) => 50301,
        }
    }

    /// The Chinese rendering: a fixed sentence per code, plus the English detail where it
    /// names a value the client sent.
    fn zh(&self) -> String {
        let base = match self.code() {
            40001 => "请求参数错误",
            40101 => "认证失败",
            40102 => "请求已过期或重复",
            40301 => "无权执行此操作",
            40401 => "支付记录不存在",
            40501 => "不支持的请求方法",
            40901 => "当前状态不允许此操作",
            40902 => "退款金额超过可退金额",
            40903 => "幂等键已用于不同的请求",
            41301 => "请求体过大",
            42901 => "请求过于频繁，请稍后重试",
            50301 => "服务暂时不可用",
            _ => "服务器内部错误",
        };
        match self {
            ApiError::BadRequest(d) | ApiError::NotAllowed(d) | ApiError::RefundExceeds(d) => {
                format!("{base}: {d}")
            }
            _ => base.to_owned(),
        }
    }

    fn message(&self, lang: Lang) -> String {
        match (lang, self) {
            (Lang::Zh, _) => self.zh(),
            (Lang::En, ApiError::NotFound(d)) if d.is_empty() => "no such payment".to_owned(),
            (Lang::En, e) => e.to_string(),
        }
    }

    fn data(&self) -> Value {
        match self {
            ApiError::LivePaymentExists { payment_id } => json!({ "payment_id": payment_id }),
            _ => Value::Null,
        }
    }

    /// The envelope body (also what an idempotent replay stores).
    pub fn body(&self, lang: Lang) -> Value {
        json!({ "code": self.code(), "message": self.message(lang), "data": self.data() })
    }

    pub fn not_found() -> ApiError {
        ApiError::NotFound(String::new())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(cause = %cause, "internal error"),
            ApiError::Unavailable(cause) => tracing::warn!(cause = %cause, "unavailable"),
            _ => {}
        }
        metrics::counter!("ledger_api_errors_total", "code" => self.code().to_string())
            .increment(1);
        let mut response = envelope::json_response(self.status(), &self.body(envelope::lang()));
        if let ApiError::TooMany {
            retry_after_secs, ..
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) => ApiError::BadRequest(m),
            DomainError::NotAllowed(m) => ApiError::NotAllowed(m),
            DomainError::OrderHasLivePayment { existing } => ApiError::LivePaymentExists {
                payment_id: existing,
            },
            e @ DomainError::RefundExceedsRefundable { .. } => {
                ApiError::RefundExceeds(e.to_string())
            }
            DomainError::NotFound => ApiError::not_found(),
            e @ DomainError::WrongGateway { .. } => ApiError::NotAllowed(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::Store(s) => s.into(),
            CommandError::TooManyConflicts(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_503_never_echoes_its_cause() {
        let e = ApiError::Unavailable("connection to 10.0.0.5:5432 refused: password".into());
        for lang in [Lang::En, Lang::Zh] {
            let body = e.body(lang).to_string();
            assert!(!body.contains("10.0.0.5"), "{body}");
            assert!(!body.contains("password"), "{body}");
        }
        assert_eq!(e.code(), 50301);
        let s = ApiError::from(StoreError::Unavailable("pool timed out after 5s".into()));
        assert!(!s.body(Lang::En).to_string().contains("pool"));
    }
}
