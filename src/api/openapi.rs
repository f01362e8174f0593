//! The OpenAPI document served at `/api/v1/openapi.json`, generated from the handlers'
//! annotations and the view types.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The success envelope: `data` depends on the route.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Envelope {
    /// 0 on success.
    code: u32,
    message: String,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// The error envelope: a non-zero code, a message (English, or Chinese with
/// `Accept-Language: zh`) and `data: null` (except 40901 for a second live payment).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    code: u32,
    message: String,
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
}

struct SignedRequests;

impl Modify for SignedRequests {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, header, text) in [
            ("key_id", "X-Key-Id", "the key id (or the gateway method for notifications)"),
            ("timestamp", "X-Timestamp", "unix seconds, within 300 s of the server clock"),
            ("nonce", "X-Nonce", "16-64 chars of [A-Za-z0-9_-], once per key on POSTs"),
            (
                "signature",
                "X-Signature",
                "lowercase hex HMAC-SHA256(secret, \"{timestamp}\\n{nonce}\\n{METHOD}\\n{path and query}\\n{hex sha256 of body}\")",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(header, text))),
            );
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ledger", description = "Event-sourced payment ledger: every response is the envelope {code, message, data}. See SPEC.md."),
    paths(
        super::payments::create,
        super::payments::status,
        super::payments::history,
        super::payments::list,
        super::payments::detail,
        super::payments::refund,
        super::payments::events,
        super::gateways::notify,
        super::audit::feed,
        super::audit::verify_chain,
        super::audit::digest,
        super::audit::totals,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics_text
    ),
    components(schemas(
        Envelope,
        ErrorBody,
        super::payments::CreateRequest,
        super::payments::PayerInput,
        super::payments::RefundRequest,
        super::payments::NotifyBody,
        crate::projections::read::PaymentDetail,
        crate::projections::read::ListPage,
        crate::projections::read::ListItem,
        crate::projections::read::CallbackView,
        crate::projections::read::RefundView,
        crate::projections::read::PayerView,
        crate::store::EventEnvelope,
        crate::store::verify::VerifyReport
    )),
    modifiers(&SignedRequests)
)]
struct ApiDoc;

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
