//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`: what every operation accepts and
//! answers, exactly, so that a client generated from it works and a request valid by it is a
//! valid request. It must not decide anything the handlers do; it describes them.
//!
//! It is built in two steps. utoipa derives the operations (paths, parameters, bodies, the
//! views' schemas) from the handlers' `#[utoipa::path]` attributes; then [`document`] adds what
//! the operations share, from one table ([`OPERATIONS`]): the `{code, message, data}` envelope
//! around each success answer's typed `data`, every error status an operation can answer with
//! its codes, the security requirements (signed request, console session, portal link), the
//! `X-Ledger-Position` and `X-Request-Id` headers, `Idempotency-Key` on the pipeline's POSTs,
//! the links from a created payment, and every shared parameter's bounds from the configured
//! `Limits`. `tests/it/contract.rs` validates real answers against the served document, and
//! `.ci/schemathesis` checks the service against it from outside.
//!
//! Two rules cross fields and so cannot be stated in JSON Schema; their descriptions say them:
//! `(page - 1) * size` is at most `LEDGER_PAGE_OFFSET_MAX`, and the scale of a refund's or a
//! notification's amount is that of the payment's currency.

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::config::Settings;
use crate::domain::money::AMOUNT_MAJOR_UNITS_MAX;
use crate::domain::payment::{GATEWAY_TEXT_CHARS_MAX, ID_TEXT_CHARS_MAX, REASON_CHARS_MAX};
use crate::domain::{Currency, PaymentMethod};

/// Real answers of the service (captured by `tests/it/contract.rs` with
/// `LEDGER_CONTRACT_ANSWERS=FILE`), one per success envelope: the document's examples. The
/// contract test validates each against its schema.
const EXAMPLES: &str = include_str!("docs/examples.json");

/// The error codes of each status (SPEC §5 "Errors"), with what each means.
const ERROR_CODES: &[(u16, &[(u32, &str)])] = &[
    (
        400,
        &[(
            40001,
            "malformed JSON, a missing or unknown field or query parameter, a bad amount, \
             scale, currency, method, text, page, size, cursor or time",
        )],
    ),
    (
        401,
        &[
            (
                40101,
                "missing or unknown credentials, a bad signature, no live console session or \
                 an expired portal link",
            ),
            (
                40102,
                "X-Timestamp more than 300 s from the server clock, or X-Nonce already used",
            ),
        ],
    ),
    (
        403,
        &[(
            40301,
            "the caller may not do this (role, missing X-CSRF-Token, another site's request, \
             a portal link outside the portal)",
        )],
    ),
    (404, &[(40401, "no such payment (or gateway)")]),
    (
        405,
        &[(
            40501,
            "method not allowed on this path; `Allow` lists the methods",
        )],
    ),
    (
        409,
        &[
            (
                40901,
                "transition not allowed (refund of an unpaid or fully refunded payment, a second \
                 live payment for an order, another gateway's payment, a log that fails \
                 verification)",
            ),
            (40902, "refund exceeds the refundable amount"),
            (40903, "Idempotency-Key reused with a different body"),
        ],
    ),
    (
        413,
        &[(
            41301,
            "body over the limit (64 KiB; a settlement file 8 MiB)",
        )],
    ),
    (
        415,
        &[(
            0,
            "the form is not application/x-www-form-urlencoded (plain text)",
        )],
    ),
    (422, &[(0, "the form lacks `outcome` (plain text)")]),
    (
        429,
        &[(
            42901,
            "too many requests of this kind right now; retry after `Retry-After` seconds",
        )],
    ),
    (500, &[(50001, "internal error (details only in the logs)")]),
    (
        503,
        &[(
            50301,
            "temporarily unavailable (database unreachable, request timed out, an \
             Idempotency-Key still running); retry",
        )],
    ),
];

/// How an operation's caller proves who it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// HMAC-signed request with an API key (SPEC §6).
    Signed,
    /// Signed the same way with a gateway's secret, `X-Key-Id` = the method.
    Gateway,
    /// A console session's cookie (GET).
    ConsoleRead,
    /// A console session's cookie and its `X-CSRF-Token` (state-changing).
    ConsoleWrite,
    /// A member portal link's bearer token.
    Portal,
}

/// What a success answer carries.
#[derive(Clone, Copy)]
enum Answer {
    /// The envelope with `data` of this component schema.
    Data(&'static str),
    /// The envelope with `data: null`.
    Null,
    /// Not the envelope: the attribute's own content (HTML, text, the document itself).
    Own,
}

/// One operation: what the attribute on its handler cannot say alone.
struct Operation {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    success: u16,
    answer: Answer,
    /// Error statuses besides 405, 500 and 503 (which every operation may answer), each with
    /// the codes this operation can give.
    errors: &'static [(u16, &'static [u32])],
    auth: &'static [Auth],
    /// Goes through the POST pipeline: `Idempotency-Key` applies.
    idempotent: bool,
}

const SIGNED_OR_CONSOLE: &[Auth] = &[Auth::Signed, Auth::ConsoleRead];
const SIGNED_OR_CONSOLE_WRITE: &[Auth] = &[Auth::Signed, Auth::ConsoleWrite];
const READERS: &[Auth] = &[Auth::Signed, Auth::ConsoleRead, Auth::Portal];
const AUTH_ERRORS: [(u16, &[u32]); 3] = [(400, &[40001]), (401, &[40101, 40102]), (403, &[40301])];
const READ_ERRORS: &[(u16, &[u32])] = &AUTH_ERRORS;
const READ_ONE_ERRORS: &[(u16, &[u32])] = &[
    AUTH_ERRORS[0],
    AUTH_ERRORS[1],
    AUTH_ERRORS[2],
    (404, &[40401]),
];
const VERIFY_ERRORS: &[(u16, &[u32])] = &[
    AUTH_ERRORS[0],
    AUTH_ERRORS[1],
    AUTH_ERRORS[2],
    (429, &[42901]),
];

/// Every operation of the document. `document` fails loudly (a unit test) when an annotated
/// operation is missing here or the other way round.
const OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/api/v1/payments/create",
        id: "create_payment",
        success: 201,
        answer: Answer::Data("CreatedPayment"),
        errors: &[
            AUTH_ERRORS[0],
            AUTH_ERRORS[1],
            AUTH_ERRORS[2],
            (409, &[40901, 40903]),
            (413, &[41301]),
        ],
        auth: SIGNED_OR_CONSOLE_WRITE,
        idempotent: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/payments/{payment_id}/status",
        id: "payment_status",
        success: 200,
        answer: Answer::Data("PaymentStatusView"),
        errors: READ_ONE_ERRORS,
        auth: READERS,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/payments/history",
        id: "payment_history",
        success: 200,
        answer: Answer::Data("HistoryView"),
        errors: READ_ERRORS,
        auth: READERS,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/payments",
        id: "list_payments",
        success: 200,
        answer: Answer::Data("ListPage"),
        errors: READ_ERRORS,
        auth: SIGNED_OR_CONSOLE,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/payments/{payment_id}",
        id: "payment_detail",
        success: 200,
        answer: Answer::Data("PaymentDetail"),
        errors: READ_ONE_ERRORS,
        auth: READERS,
        idempotent: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/payments/{payment_id}/refund",
        id: "refund_payment",
        success: 201,
        answer: Answer::Data("RequestedRefund"),
        errors: &[
            AUTH_ERRORS[0],
            AUTH_ERRORS[1],
            AUTH_ERRORS[2],
            (404, &[40401]),
            (409, &[40901, 40902, 40903]),
            (413, &[41301]),
        ],
        auth: SIGNED_OR_CONSOLE_WRITE,
        idempotent: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/payments/{payment_id}/events",
        id: "payment_events",
        success: 200,
        answer: Answer::Data("PaymentEvents"),
        errors: READ_ONE_ERRORS,
        auth: SIGNED_OR_CONSOLE,
        idempotent: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/gateways/{method}/notify",
        id: "gateway_notify",
        success: 200,
        answer: Answer::Data("NotifyAnswer"),
        errors: &[
            AUTH_ERRORS[0],
            AUTH_ERRORS[1],
            AUTH_ERRORS[2],
            (404, &[40401]),
            (409, &[40901, 40903]),
            (413, &[41301]),
        ],
        auth: &[Auth::Gateway],
        idempotent: true,
    },
    Operation {
        method: "get",
        path: "/api/v1/events",
        id: "event_feed",
        success: 200,
        answer: Answer::Data("EventFeed"),
        errors: READ_ERRORS,
        auth: SIGNED_OR_CONSOLE,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/audit/verify",
        id: "verify_log",
        success: 200,
        answer: Answer::Data("VerifyReport"),
        errors: VERIFY_ERRORS,
        auth: SIGNED_OR_CONSOLE,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/audit/digest",
        id: "signed_digest",
        success: 200,
        answer: Answer::Data("SignedDigest"),
        errors: &[
            AUTH_ERRORS[0],
            AUTH_ERRORS[1],
            AUTH_ERRORS[2],
            (409, &[40901]),
            (429, &[42901]),
        ],
        auth: SIGNED_OR_CONSOLE,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/ledger/totals",
        id: "ledger_totals",
        success: 200,
        answer: Answer::Data("Totals"),
        errors: READ_ERRORS,
        auth: SIGNED_OR_CONSOLE,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/ledger/daily",
        id: "ledger_daily",
        success: 200,
        answer: Answer::Data("Daily"),
        errors: READ_ERRORS,
        auth: SIGNED_OR_CONSOLE,
        idempotent: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/reconcile",
        id: "reconcile_settlement",
        success: 200,
        answer: Answer::Data("ReconcileReport"),
        errors: &[
            AUTH_ERRORS[0],
            AUTH_ERRORS[1],
            AUTH_ERRORS[2],
            (413, &[41301]),
        ],
        auth: SIGNED_OR_CONSOLE_WRITE,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/checkout/{payment_no}",
        id: "checkout",
        success: 200,
        answer: Answer::Data("CheckoutView"),
        errors: &[(400, &[40001]), (404, &[40401])],
        auth: &[],
        idempotent: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/console/sessions",
        id: "console_sign_in",
        success: 201,
        answer: Answer::Data("ConsoleSession"),
        errors: &[
            (400, &[40001]),
            (401, &[40101]),
            (403, &[40301]),
            (413, &[41301]),
            (429, &[42901]),
        ],
        auth: &[],
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/console/sessions/current",
        id: "console_session",
        success: 200,
        answer: Answer::Data("ConsoleCurrent"),
        errors: &[(401, &[40101, 40102]), (403, &[40301])],
        auth: &[Auth::ConsoleRead],
        idempotent: false,
    },
    Operation {
        method: "delete",
        path: "/api/v1/console/sessions/current",
        id: "console_sign_out",
        success: 200,
        answer: Answer::Null,
        errors: &[(401, &[40101, 40102]), (403, &[40301]), (413, &[41301])],
        auth: &[Auth::ConsoleWrite],
        idempotent: false,
    },
    Operation {
        method: "post",
        path: "/api/v1/portal/sessions",
        id: "portal_link",
        success: 201,
        answer: Answer::Data("PortalLink"),
        errors: &[
            AUTH_ERRORS[0],
            AUTH_ERRORS[1],
            AUTH_ERRORS[2],
            (413, &[41301]),
        ],
        auth: SIGNED_OR_CONSOLE_WRITE,
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/portal/session",
        id: "portal_session",
        success: 200,
        answer: Answer::Data("PortalSession"),
        errors: &[(401, &[40101, 40102]), (403, &[40301])],
        auth: &[Auth::Portal],
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/api/v1/openapi.json",
        id: "openapi_document",
        success: 200,
        answer: Answer::Own,
        errors: &[],
        auth: &[],
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/healthz",
        id: "healthz",
        success: 200,
        answer: Answer::Data("Health"),
        errors: &[],
        auth: &[],
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/readyz",
        id: "readyz",
        success: 200,
        answer: Answer::Data("Readiness"),
        errors: &[],
        auth: &[],
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/metrics",
        id: "metrics",
        success: 200,
        answer: Answer::Own,
        errors: &[],
        auth: &[],
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/sandbox/pay/{payment_no}",
        id: "sandbox_page",
        success: 200,
        answer: Answer::Own,
        errors: &[],
        auth: &[],
        idempotent: false,
    },
    Operation {
        method: "post",
        path: "/sandbox/pay/{payment_no}",
        id: "sandbox_act",
        success: 303,
        answer: Answer::Own,
        errors: &[(415, &[0]), (422, &[0])],
        auth: &[],
        idempotent: false,
    },
    Operation {
        method: "get",
        path: "/sandbox/pay/{payment_no}/result",
        id: "sandbox_result",
        success: 200,
        answer: Answer::Own,
        errors: &[],
        auth: &[],
        idempotent: false,
    },
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ledger",
        description = "Event-sourced payment ledger (SPEC.md §5, §6, §11, §12).\n\n\
Every JSON answer under `/api/v1` is the envelope `{\"code\": 0, \"message\": \"success\", \"data\": ...}`; \
an error has a non-zero `code`, a `message` (English, or Chinese with `Accept-Language: zh`) and \
`data: null` (except 40901 for a second live payment of an order: `data: {payment_id}`).\n\n\
**Signing** (SPEC §6): `X-Key-Id`, `X-Timestamp` (unix seconds, within 300 s), `X-Nonce` (16-64 of \
`[A-Za-z0-9_-]`, once per key on POSTs) and `X-Signature` = lowercase hex \
HMAC-SHA256(secret, `{timestamp}\\n{nonce}\\n{METHOD}\\n{path and query as sent}\\n{hex sha256 of body}`). \
`/docs` signs \"Try it out\" requests in the browser; on the command line `ledger api METHOD PATH [BODY]` \
signs with `LEDGER_KEY_ID` / `LEDGER_SECRET`.\n\n\
**Read your writes**: a successful POST answers once the read models include it (`data.position`); \
every GET answers `X-Ledger-Position` and accepts `min_position`.\n\n\
**Amounts** are exact decimal strings at the currency's scale (`\"100.00\"`, JPY `\"500\"`); requests \
accept a decimal string or a JSON integer (a JSON number with a fraction is accepted too, as SPEC §5 \
says, but binary floating point cannot state a decimal scale: send strings). Times are RFC 3339 UTC.",
        license(name = "MIT"),
    ),
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
        super::finance::daily,
        super::finance::reconcile_upload,
        super::checkout::checkout,
        super::console::sign_in,
        super::console::current,
        super::console::sign_out,
        super::portal::create,
        super::portal::current,
        super::docs::openapi_json,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics_text,
        super::sandbox::page,
        super::sandbox::act,
        super::sandbox::result,
    ),
    components(schemas(
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
    tags(
        (name = "payments", description = "Create, read and refund payments"),
        (name = "gateways", description = "Gateway notifications"),
        (name = "audit", description = "The event log, its verification and its signed digest"),
        (name = "finance", description = "Totals, daily amounts and settlement reconciliation"),
        (name = "pages", description = "What the checkout, console and portal pages call"),
        (name = "sandbox", description = "The sandbox gateway's pay page (only with LEDGER_SANDBOX=on)"),
        (name = "operations", description = "Probes, metrics and this document (unsigned)")
    )
)]
struct ApiDoc;

/// The document for a service with these settings (its limits bound the parameters; the
/// sandbox's routes are there only while the sandbox runs).
pub fn document(settings: &Settings) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    let components = object(&mut doc, "components");
    let schemas = entry_object(components, "schemas");
    for (name, schema) in shared_schemas(settings) {
        schemas.insert(name, schema);
    }
    tighten_views(schemas);
    for (name, schema) in answer_schemas() {
        schemas.insert(name.to_owned(), schema);
    }
    tighten_requests(schemas);
    let envelopes: Vec<&str> = OPERATIONS
        .iter()
        .filter_map(|o| match o.answer {
            Answer::Data(name) => Some(name),
            _ => None,
        })
        .collect();
    let examples: Value =
        serde_json::from_str(EXAMPLES).expect("docs/examples.json is JSON (a unit test checks)");
    for name in envelopes {
        let mut schema = envelope(json!({ "$ref": schema_ref(name) }));
        if let Some(example) = examples.get(name) {
            schema["example"] = example.clone();
        }
        schemas.insert(format!("{name}Envelope"), schema);
    }
    let mut null = envelope(json!({ "type": "null" }));
    null["example"] = examples["NullEnvelope"].clone();
    schemas.insert("NullEnvelope".into(), null);
    schemas.insert("Error".into(), error_schema());
    schemas.insert("LivePaymentExists".into(), live_payment_exists());
    components.insert("securitySchemes".into(), security_schemes());
    components.insert("headers".into(), headers());

    let paths = object(&mut doc, "paths");
    if settings.sandbox_secret.is_none() {
        paths.retain(|p, _| !p.starts_with("/sandbox/"));
    }
    let mut seen = Vec::new();
    for (path, item) in paths.iter_mut() {
        for (method, op) in item.as_object_mut().expect("a path item is an object") {
            let spec = OPERATIONS
                .iter()
                .find(|o| o.method == method.as_str() && o.path == path.as_str())
                .unwrap_or_else(|| panic!("{method} {path} is annotated but not in OPERATIONS"));
            seen.push(spec.id);
            finish_operation(op, spec, settings);
        }
    }
    for spec in OPERATIONS {
        let sandbox = spec.path.starts_with("/sandbox/");
        assert!(
            seen.contains(&spec.id) || (sandbox && settings.sandbox_secret.is_none()),
            "{} {} is in OPERATIONS but not annotated",
            spec.method,
            spec.path
        );
    }
    doc
}

fn object<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    v.as_object_mut()
        .expect("an object")
        .entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("an object")
}

fn entry_object<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    m.entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("an object")
}

fn schema_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

fn envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "description": "The success envelope.",
        "required": ["code", "message", "data"],
        "properties": {
            "code": { "type": "integer", "const": 0 },
            "message": { "type": "string", "description": "\"success\", or \"成功\" with Accept-Language: zh" },
            "data": data,
        },
    })
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "An error: a non-zero code, a message in the request's language, data null.",
        "required": ["code", "message", "data"],
        "properties": {
            "code": { "type": "integer", "minimum": 40000, "maximum": 59999 },
            "message": { "type": "string", "minLength": 1 },
            "data": { "type": "null" },
        },
    })
}

fn live_payment_exists() -> Value {
    json!({
        "type": "object",
        "description": "40901 for a second live payment of an order: data names the existing payment.",
        "required": ["code", "message", "data"],
        "properties": {
            "code": { "type": "integer", "const": 40901 },
            "message": { "type": "string", "minLength": 1 },
            "data": {
                "type": "object",
                "required": ["payment_id"],
                "properties": { "payment_id": { "type": "string", "format": "uuid" } },
            },
        },
    })
}

/// A non-empty text of at most `max` characters, none of them a control character (what
/// `check_text` accepts).
fn text(min: usize, max: Option<usize>) -> Value {
    let mut s = json!({ "type": "string", "pattern": NO_CONTROL, "minLength": min });
    if let Some(max) = max {
        s["maxLength"] = json!(max);
    }
    s
}

/// A settlement file the reconciliation reads: the header, then lines of a payment number, a
/// trade number (a refund's refund_no), the type, an amount over 0, a fee (may be empty) and
/// an RFC 3339 time. The service reads more (quoted fields, other column orders, CRLF); this
/// is what a file valid by the document looks like.
const SETTLEMENT_FILE: &str = "^payment_no,gateway_trade_no,type,amount,fee,settled_at\\n([A-Za-z0-9_-]{1,40},[A-Za-z0-9_-]{1,40},(payment|refund),[1-9][0-9]{0,11}(\\.[0-9]{1,4})?,([0-9]{1,12}(\\.[0-9]{1,4})?)?,20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z\\n)*$";

/// No control character (Unicode Cc: what Rust's `char::is_control` refuses).
const NO_CONTROL: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// The accepted spellings of an amount string at `scale` decimal places: a plain decimal
/// (no sign, exponent, spaces or leading zeros), greater than 0, at most 1,000,000,000,000,
/// with no more significant decimals than the scale (trailing zeros beyond it are fine).
pub fn amount_pattern(scale: u32) -> String {
    let max = AMOUNT_MAJOR_UNITS_MAX.to_string();
    let trailing = "0*";
    let (fraction, below_one) = if scale == 0 {
        ("(\\.0+)?".to_owned(), String::new())
    } else {
        (
            format!("(\\.[0-9]{{1,{scale}}}{trailing})?"),
            format!("|0\\.[0-9]{{0,{}}}[1-9]{trailing}", scale - 1),
        )
    };
    format!(
        "^([1-9][0-9]{{0,{int}}}{fraction}|{max}(\\.0+)?{below_one})$",
        int = max.len() - 2,
    )
}

fn amount_in(scale: u32) -> Value {
    json!({
        "anyOf": [
            { "type": "string", "pattern": amount_pattern(scale), "maxLength": 64 },
            { "type": "integer", "minimum": 1, "maximum": AMOUNT_MAJOR_UNITS_MAX },
        ],
    })
}

/// The largest scale of any accepted currency (what a refund or notification may carry).
fn scale_max() -> u32 {
    Currency::all().map(|c| c.minor_unit()).max().unwrap_or(2)
}

/// Components every operation shares: codes, amounts, statuses.
fn shared_schemas(_settings: &Settings) -> Vec<(String, Value)> {
    let codes: Vec<&str> = Currency::all().map(|c| c.code()).collect();
    let methods: Vec<&str> = PaymentMethod::ALL.iter().map(|m| m.name()).collect();
    vec![
        (
            "CurrencyCode".into(),
            json!({
                "type": "string",
                "description": "An active ISO 4217 code (its minor unit sets the amount's scale).",
                "enum": codes,
                "example": "CNY",
            }),
        ),
        (
            "PaymentMethod".into(),
            json!({ "type": "string", "enum": methods, "example": "alipay" }),
        ),
        (
            "PaymentStatus".into(),
            json!({ "type": "string", "enum": ["pending", "success", "failed", "refunded"] }),
        ),
        (
            "CallbackStatus".into(),
            json!({
                "type": "string",
                "description": "What the ledger did with a notification: success (applied), failed (refused), processing (received, not applied).",
                "enum": ["processing", "success", "failed"],
            }),
        ),
        (
            "RefundStatus".into(),
            json!({ "type": "string", "enum": ["processing", "success", "failed"] }),
        ),
        (
            "AmountText".into(),
            json!({
                "type": "string",
                "description": "An exact decimal at the currency's scale.",
                "pattern": "^[0-9]+(\\.[0-9]+)?$",
                "example": "100.00",
            }),
        ),
        (
            "AmountInput".into(),
            json!({
                "description": format!(
                    "A decimal string (digits and an optional fraction: no sign, exponent, spaces or leading zeros) or a JSON integer, greater than 0 and at most {AMOUNT_MAJOR_UNITS_MAX}, with no more decimals than the payment's currency allows (it is never rounded; zeros may follow, within 64 characters)."
                ),
                "anyOf": amount_in(scale_max())["anyOf"],
                "example": "30.00",
            }),
        ),
        (
            "Hash".into(),
            json!({ "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "Lowercase hex SHA-256." }),
        ),
        (
            "PaymentNo".into(),
            json!({ "type": "string", "pattern": "^P[0-9A-F]{32}$", "example": "P0193A5B2C3D47E8F9A0B1C2D3E4F5A6B" }),
        ),
    ]
}

/// `T` or null, keeping what `T` says.
fn or_null(schema: Value) -> Value {
    json!({ "oneOf": [schema, { "type": "null" }] })
}

fn date_time() -> Value {
    json!({ "type": "string", "format": "date-time", "example": "2026-11-30T08:15:00.123456Z" })
}

fn uuid() -> Value {
    json!({ "type": "string", "format": "uuid" })
}

fn int64(min: i64) -> Value {
    json!({ "type": "integer", "format": "int64", "minimum": min })
}

fn named(name: &str) -> Value {
    json!({ "$ref": schema_ref(name) })
}

/// Makes the schemas derived from the view types say what their strings are (amounts,
/// times, codes and statuses are strings in Rust), by the fields' names, and marks every
/// field required: every view serializes all its fields, null or not.
fn tighten_views(schemas: &mut Map<String, Value>) {
    let status = |component: &str| match component {
        "CallbackView" => Some("CallbackStatus"),
        "RefundView" => Some("RefundStatus"),
        _ => Some("PaymentStatus"),
    };
    for (component, schema) in schemas.iter_mut() {
        let views = [
            "PaymentDetail",
            "ListPage",
            "ListItem",
            "CallbackView",
            "RefundView",
            "PayerView",
            "EventEnvelope",
            "VerifyReport",
            "PaymentStatusView",
            "HistoryView",
            "HistoryItem",
            "CheckoutView",
            "ConsoleSession",
            "ConsoleCurrent",
            "PortalLink",
            "PortalSession",
            "Daily",
            "Day",
            "ReconcileReport",
            "ReconcileItem",
        ];
        if !views.contains(&component.as_str()) {
            continue;
        }
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        let names: Vec<String> = props.keys().cloned().collect();
        for (field, prop) in props.iter_mut() {
            let nullable = prop["type"]
                .as_array()
                .is_some_and(|t| t.contains(&json!("null")))
                || prop.get("oneOf").is_some();
            let typed = match field.as_str() {
                "amount" | "paid_amount" | "refunded_amount" | "refundable_amount"
                | "flagged_amount" | "from_suspense" | "file_amount" | "ledger_amount" => {
                    Some(named("AmountText"))
                }
                "currency" => Some(named("CurrencyCode")),
                "payment_method" | "gateway" => Some(named("PaymentMethod")),
                "status" => status(component).map(named),
                // A settlement file's lines name payments as the file spells them.
                "payment_no" if component != "ReconcileItem" => Some(named("PaymentNo")),
                "hash" | "prev_hash" | "head_hash" | "root_hash" => Some(named("Hash")),
                "id" | "payment_id" | "event_id" => Some(uuid()),
                // A return_url is stored as the client sent it: visible ASCII, not always a
                // URI by RFC 3986.
                "return_url" => Some(json!({ "type": "string" })),
                "payment_url" | "url" | "pay_url" => {
                    Some(json!({ "type": "string", "format": "uri" }))
                }
                f if f.ends_with("_at") || f.ends_with("_time") => Some(date_time()),
                "position" | "head_position" => Some(int64(0)),
                "version" => Some(json!({ "type": "integer", "format": "int32", "minimum": 1 })),
                _ => None,
            };
            if let Some(t) = typed {
                let description = prop.get("description").cloned();
                *prop = if nullable { or_null(t) } else { t };
                if let Some(d) = description {
                    prop["description"] = d;
                }
            }
        }
        if component == "EventEnvelope" {
            props.insert(
                "type".into(),
                json!({
                    "type": "string",
                    "description": "The event type (SPEC §2).",
                    "enum": ["created", "callback_received", "paid", "failed", "refund_requested", "refunded", "refund_failed"],
                }),
            );
        }
        if component == "CallbackView" {
            props.insert(
                "outcome".into(),
                json!({ "type": "string", "enum": ["success", "failed"] }),
            );
        }
        if component == "VerifyReport" {
            // An empty log has no head: its hash is the genesis (64 zeros).
            props.insert("events_checked".into(), int64(0));
            props.insert("first_broken_position".into(), or_null(int64(1)));
        }
        schema["required"] = json!(names);
    }
}

/// What the request bodies accept, exactly: lengths, enums, the amount's scale by currency.
fn tighten_requests(schemas: &mut Map<String, Value>) {
    let id_text = text(1, Some(ID_TEXT_CHARS_MAX));
    if let Some(create) = schemas.get_mut("CreateRequest") {
        let p = &mut create["properties"];
        p["amount"] = json!({
            "$ref": schema_ref("AmountInput"),
            "description": "Its decimals may not exceed the currency's minor unit (see the conditions below).",
        });
        p["currency"] = named("CurrencyCode");
        p["payment_method"] = named("PaymentMethod");
        p["order_id"] = id_text.clone();
        p["user_id"] = id_text.clone();
        p["payer"] = json!({ "oneOf": [named("PayerInput"), { "type": "null" }] });
        p["return_url"] = json!({
            "oneOf": [
                {
                    "type": "string",
                    "format": "uri",
                    "pattern": "^https?://[!-~]+$",
                    "minLength": 9,
                    "maxLength": crate::domain::payment::RETURN_URL_CHARS_MAX,
                    "description": "An absolute http(s) URL of visible ASCII: where the member goes back after a failure.",
                },
                { "type": "null" },
            ],
        });
        // The amount's scale depends on the currency: one condition per minor unit.
        let mut by_scale: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
        for c in Currency::all() {
            by_scale.entry(c.minor_unit()).or_default().push(c.code());
        }
        let conditions: Vec<Value> = by_scale
            .iter()
            .map(|(scale, codes)| {
                json!({
                    "if": { "required": ["currency"], "properties": { "currency": { "enum": codes } } },
                    "then": { "properties": { "amount": amount_in(*scale) } },
                })
            })
            .collect();
        create["allOf"] = json!(conditions);
        create["example"] = json!({
            "amount": "100.00", "currency": "CNY", "payment_method": "alipay",
            "order_id": "ORD-20261130-0001", "user_id": "U-1001",
            "payer": { "name": "张三", "account": "4111111111111111" },
            "return_url": "https://shop.example/orders/ORD-20261130-0001",
        });
    }
    if let Some(payer) = schemas.get_mut("PayerInput") {
        payer["description"] = json!(
            "Stored only encrypted, shown masked. An account that looks like a card number \
             (12-19 digits, spaces and dashes allowed) must pass the Luhn check."
        );
        payer["properties"]["name"] = or_null(text(1, Some(100)));
        payer["properties"]["account"] = or_null(text(1, Some(64)));
        payer["anyOf"] = json!([
            { "required": ["name"], "properties": { "name": { "type": "string" } } },
            { "required": ["account"], "properties": { "account": { "type": "string" } } },
        ]);
    }
    if let Some(refund) = schemas.get_mut("RefundRequest") {
        refund["properties"]["amount"] = json!({
            "$ref": schema_ref("AmountInput"),
            "description": "At most the refundable amount, with no more decimals than the payment's currency allows.",
        });
        refund["properties"]["reason"] = text(1, Some(REASON_CHARS_MAX));
        refund["example"] = json!({ "amount": "30.00", "reason": "customer returned the goods" });
    }
    if let Some(sign_in) = schemas.get_mut("ConsoleSignIn") {
        sign_in["properties"]["key_id"] = text(1, Some(64));
        sign_in["properties"]["secret"] = json!({ "type": "string", "format": "password" });
    }
    if let Some(link) = schemas.get_mut("PortalLinkRequest") {
        link["properties"]["user_id"] = text(1, Some(ID_TEXT_CHARS_MAX));
    }
    if let Some(action) = schemas.get_mut("SandboxAction") {
        action["properties"]["outcome"] =
            json!({ "type": "string", "enum": ["success", "failed"] });
        action["properties"]["token"] = json!({
            "type": "string",
            "description": "The one-time token of the rendered page.",
        });
    }
    if let Some(notify) = schemas.get_mut("NotifyBody") {
        let p = &mut notify["properties"];
        p["payment_no"] = text(1, Some(ID_TEXT_CHARS_MAX));
        p["callback_no"] = text(1, Some(GATEWAY_TEXT_CHARS_MAX));
        p["gateway_trade_no"] = text(1, Some(GATEWAY_TEXT_CHARS_MAX));
        p["status"] = json!({ "type": "string", "enum": ["success", "failed"] });
        p["amount"] = json!({
            "$ref": schema_ref("AmountInput"),
            "description": "What the gateway took; a different amount than the payment's is recorded and refused.",
        });
        p["paid_at"] = or_null(date_time());
        p["refund_no"] = or_null(text(1, Some(ID_TEXT_CHARS_MAX)));
        notify["example"] = json!({
            "payment_no": "P0193A5B2C3D47E8F9A0B1C2D3E4F5A6B", "callback_no": "CB-0001",
            "status": "success", "amount": "100.00", "gateway_trade_no": "T-0001",
            "paid_at": "2026-11-30T08:15:00Z",
        });
    }
}

/// The answers that handlers build as JSON values (no Rust type of their own).
fn answer_schemas() -> Vec<(&'static str, Value)> {
    let object = |required: &[&str], properties: Value| json!({ "type": "object", "required": required, "properties": properties });
    vec![
        (
            "CreatedPayment",
            object(
                &[
                    "payment_id",
                    "payment_no",
                    "payment_url",
                    "status",
                    "failure_reason",
                    "amount",
                    "currency",
                    "return_url",
                    "position",
                ],
                json!({
                    "payment_id": uuid(),
                    "payment_no": named("PaymentNo"),
                    "payment_url": { "type": "string", "format": "uri", "description": "The checkout page: {LEDGER_PUBLIC_URL}/checkout/{payment_no}." },
                    "status": { "type": "string", "enum": ["pending", "failed"], "description": "failed when the gateway refused the order." },
                    "failure_reason": { "type": ["string", "null"] },
                    "amount": named("AmountText"),
                    "currency": named("CurrencyCode"),
                    "return_url": { "type": ["string", "null"] },
                    "position": int64(1),
                }),
            ),
        ),
        (
            "RequestedRefund",
            object(
                &[
                    "id",
                    "payment_id",
                    "refund_no",
                    "amount",
                    "reason",
                    "status",
                    "created_at",
                    "position",
                ],
                json!({
                    "id": uuid(),
                    "payment_id": uuid(),
                    "refund_no": { "type": "string", "pattern": "^R[0-9A-F]{32}$" },
                    "amount": named("AmountText"),
                    "reason": { "type": "string" },
                    "status": named("RefundStatus"),
                    "created_at": date_time(),
                    "position": int64(1),
                }),
            ),
        ),
        (
            "NotifyAnswer",
            object(
                &[
                    "payment_id",
                    "callback_no",
                    "status",
                    "duplicate",
                    "position",
                ],
                json!({
                    "payment_id": uuid(),
                    "callback_no": { "type": "string" },
                    "status": named("CallbackStatus"),
                    "duplicate": { "type": "boolean", "description": "true when this callback_no was seen before: nothing changed." },
                    "position": int64(0),
                }),
            ),
        ),
        (
            "PaymentEvents",
            object(
                &["payment_id", "events"],
                json!({
                    "payment_id": uuid(),
                    "events": { "type": "array", "items": named("EventEnvelope") },
                }),
            ),
        ),
        (
            "EventFeed",
            object(
                &["events", "next_after"],
                json!({
                    "events": { "type": "array", "items": named("EventEnvelope") },
                    "next_after": { "type": "integer", "format": "int64", "minimum": 0, "description": "Pass as after= for the next page." },
                }),
            ),
        ),
        (
            "SignedDigest",
            object(
                &[
                    "position",
                    "root_hash",
                    "signed_at",
                    "public_key",
                    "signature",
                ],
                json!({
                    "position": int64(0),
                    "root_hash": named("Hash"),
                    "signed_at": date_time(),
                    "public_key": { "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "Ed25519 public key, hex." },
                    "signature": { "type": "string", "pattern": "^[0-9a-f]{128}$", "description": "Ed25519 signature of `ledger-digest:v1\\n{position}\\n{root_hash}\\n{signed_at}`, hex." },
                }),
            ),
        ),
        (
            "CurrencyTotals",
            object(
                &[
                    "currency",
                    "paid_count",
                    "paid_amount",
                    "refunded_amount",
                    "flagged_amount",
                    "net_amount",
                    "matches",
                    "read_model",
                ],
                json!({
                    "currency": named("CurrencyCode"),
                    "paid_count": int64(0),
                    "paid_amount": named("AmountText"),
                    "refunded_amount": named("AmountText"),
                    "flagged_amount": named("AmountText"),
                    "net_amount": { "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$", "description": "paid + flagged - refunded." },
                    "matches": { "type": "boolean" },
                    "read_model": {
                        "type": "object",
                        "description": "The same figures from the read tables.",
                        "required": ["paid_count", "paid_amount", "refunded_amount", "flagged_amount"],
                        "properties": {
                            "paid_count": int64(0),
                            "paid_amount": named("AmountText"),
                            "refunded_amount": named("AmountText"),
                            "flagged_amount": named("AmountText"),
                        },
                    },
                }),
            ),
        ),
        (
            "Totals",
            object(
                &["matches", "position", "currencies"],
                json!({
                    "matches": { "type": "boolean", "description": "The log and the read tables agree for every currency." },
                    "position": int64(0),
                    "currencies": { "type": "array", "items": named("CurrencyTotals") },
                }),
            ),
        ),
        (
            "Health",
            object(
                &["status"],
                json!({ "status": { "type": "string", "const": "ok" } }),
            ),
        ),
        (
            "Readiness",
            object(
                &[
                    "ready",
                    "database",
                    "bus",
                    "head_position",
                    "projected_position",
                    "projection_lag",
                    "relay_backlog",
                    "node",
                    "role",
                    "duties",
                ],
                json!({
                    "ready": { "type": "boolean" },
                    "database": { "type": "boolean" },
                    "bus": { "type": "string", "enum": ["in-process", "connected", "disconnected"] },
                    "head_position": int64(0),
                    "projected_position": int64(0),
                    "projection_lag": int64(0),
                    "relay_backlog": { "type": ["integer", "null"], "format": "int64", "minimum": 0 },
                    "node": { "type": "string" },
                    "role": { "type": "string", "enum": ["all", "api", "projector"] },
                    "duties": {
                        "type": "object",
                        "description": "The background duties this node leads, with their fencing tokens.",
                        "additionalProperties": { "type": "integer", "format": "int64" },
                    },
                }),
            ),
        ),
    ]
}

fn security_schemes() -> Value {
    let header = |name: &str, text: &str| json!({ "type": "apiKey", "in": "header", "name": name, "description": text });
    json!({
        "keyId": header("X-Key-Id", "The key id (or, for a gateway notification, the method)."),
        "timestamp": header("X-Timestamp", "Unix seconds, within 300 s of the server clock."),
        "nonce": header("X-Nonce", "16-64 characters of [A-Za-z0-9_-], fresh for every request (once per key on POSTs)."),
        "signature": header(
            "X-Signature",
            "Lowercase hex HMAC-SHA256(secret, \"{timestamp}\\n{nonce}\\n{METHOD}\\n{path and query as sent}\\n{hex sha256 of body}\"). The secret never travels.",
        ),
        "consoleSession": {
            "type": "apiKey", "in": "cookie", "name": "ledger_console",
            "description": "The staff console's session (POST /api/v1/console/sessions); a state-changing request also needs X-CSRF-Token.",
        },
        "csrfToken": header("X-CSRF-Token", "The console session's csrf_token, on every state-changing request with the cookie."),
        "portalToken": {
            "type": "http", "scheme": "bearer",
            "description": "A member portal link's token (POST /api/v1/portal/sessions): GETs of the portal's routes only.",
        },
    })
}

fn headers() -> Value {
    json!({
        "X-Ledger-Position": {
            "description": "The log position the read models include (on every GET answer, errors too).",
            "required": true,
            "schema": { "type": "integer", "format": "int64", "minimum": 0 },
        },
        "X-Request-Id": {
            "description": "The request's id: the client's X-Request-Id when it is 1-64 of [A-Za-z0-9._-], otherwise a generated one.",
            "required": true,
            "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" },
        },
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": true,
            "schema": { "type": "integer", "minimum": 0 },
        },
        "Allow": {
            "description": "The methods this path supports.",
            "required": true,
            "schema": { "type": "string" },
        },
        "Idempotent-Replayed": {
            "description": "true when the answer is the stored first answer to this Idempotency-Key.",
            "schema": { "type": "string", "enum": ["true"] },
        },
    })
}

fn security(auth: &[Auth]) -> Value {
    let signed = json!({ "keyId": [], "timestamp": [], "nonce": [], "signature": [] });
    Value::Array(
        auth.iter()
            .map(|a| match a {
                Auth::Signed | Auth::Gateway => signed.clone(),
                Auth::ConsoleRead => json!({ "consoleSession": [] }),
                Auth::ConsoleWrite => json!({ "consoleSession": [], "csrfToken": [] }),
                Auth::Portal => json!({ "portalToken": [] }),
            })
            .collect(),
    )
}

fn header_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/headers/{name}") })
}

/// The bounds of the parameters several operations share, from the configured limits.
fn parameter_schema(op: &Operation, name: &str, settings: &Settings) -> Option<Value> {
    let limits = &settings.limits;
    let empty = json!({ "type": "string", "maxLength": 0 });
    let time = json!({
        "description": "RFC 3339 (a time without an offset is taken as UTC); an empty value counts as absent.",
        "anyOf": [date_time(), empty],
    });
    Some(match name {
        "page" => json!({
            "type": "integer", "minimum": 1, "maximum": i64::from(limits.page_offset_max) + 1, "default": 1,
            "description": format!("1-based page number. (page - 1) * size may not exceed {} (deeper lists page with after=).", limits.page_offset_max),
        }),
        "size" => json!({
            "type": "integer", "minimum": 1, "maximum": limits.page_size_max, "default": 10,
        }),
        "after" if op.id == "event_feed" => json!({
            "type": "integer", "format": "int64", "minimum": 0, "default": 0,
            "description": "Events after this position (next_after of the previous page).",
        }),
        "after" => json!({
            "description": "The next_after cursor of the previous page (use either page or after); an empty value counts as absent.",
            "anyOf": [
                { "type": "string", "pattern": "^[+-]?[0-9]{1,18}_([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$" },
                empty,
            ],
        }),
        "limit" => json!({
            "type": "integer", "minimum": 1, "maximum": limits.events_limit_max, "default": 100,
        }),
        "min_position" => json!({
            "type": "integer", "format": "int64", "minimum": 0,
            "description": format!("Wait (at most {} ms) until the read models include this log position.", limits.min_position_wait_ms),
        }),
        "status" => json!({
            "description": "pending, success, failed, refunded, or their numbers 0-3; an empty value counts as absent.",
            "anyOf": [
                { "type": "string", "enum": ["pending", "success", "failed", "refunded"] },
                { "type": "string", "pattern": "^([+-]?0*0|\\+?0*[1-3])$" },
                empty,
            ],
        }),
        "flagged" => json!({
            "type": "string", "enum": ["true", "false", ""],
            "description": "Only payments flagged for refund (true) or not (false); empty counts as absent.",
        }),
        "start_time" | "end_time" | "as_of" => time,
        "order_no" | "payment_no" if op.id == "list_payments" => json!({
            "type": "string", "pattern": NO_CONTROL,
            "description": "Exact match; an empty value counts as absent.",
        }),
        "payment_no" => {
            json!({ "type": "string", "description": "The payment number (P + 32 hex digits)." })
        }
        "currency" => json!({
            "description": "One currency; all when absent or empty.",
            "anyOf": [named("CurrencyCode"), empty],
        }),
        "user_id" => text(1, None),
        "payment_id" => uuid(),
        "method" => named("PaymentMethod"),
        _ => return None,
    })
}

fn finish_operation(op: &mut Value, spec: &Operation, settings: &Settings) {
    op["operationId"] = json!(spec.id);
    if spec.auth.is_empty() {
        op["security"] = json!([]);
    } else {
        op["security"] = security(spec.auth);
    }
    // Parameters: shared bounds, and the idempotency key of the pipeline's POSTs.
    let params = op
        .as_object_mut()
        .expect("an operation is an object")
        .entry("parameters")
        .or_insert_with(|| json!([]));
    for p in params.as_array_mut().expect("parameters are a list") {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        if let Some(schema) = parameter_schema(spec, &name, settings) {
            p["schema"] = schema;
        }
    }
    if spec.idempotent {
        params.as_array_mut().expect("a list").push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Retry-safe key (per key id and route, kept 24 h): the same key and body answer the first answer again; another body is 409/40903. A request refused by validation (400) or authentication (401/403) is not stored under it.",
            "schema": { "type": "string", "minLength": 1, "maxLength": crate::api::pipeline::KEY_CHARS_MAX, "pattern": "^[!-~]+$" },
        }));
    }
    if params.as_array().is_some_and(Vec::is_empty) {
        op.as_object_mut().expect("an object").remove("parameters");
    }

    if spec.id == "reconcile_settlement" {
        op["requestBody"]["content"]["text/csv"]["schema"] = json!({
            "type": "string",
            "description": "A header line naming the columns, then one line per settled payment or refund (a refund line carries its refund_no in gateway_trade_no).",
            "pattern": SETTLEMENT_FILE,
            "example": "payment_no,gateway_trade_no,type,amount,fee,settled_at\nP0193A5B2C3D47E8F9A0B1C2D3E4F5A6B,T-0001,payment,100.00,0.60,2026-11-30T08:00:00Z\n",
        });
    }
    let get = spec.method == "get";
    let responses = op
        .as_object_mut()
        .expect("an object")
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses are an object");
    let success = responses
        .entry(spec.success.to_string())
        .or_insert_with(|| json!({ "description": "success" }));
    match spec.answer {
        Answer::Data(name) => {
            success["content"] = json!({
                "application/json": { "schema": named(&format!("{name}Envelope")) }
            });
        }
        Answer::Null => {
            success["content"] = json!({ "application/json": { "schema": named("NullEnvelope") } });
        }
        Answer::Own => {}
    }
    if spec.id == "create_payment" {
        success["links"] = json!({
            "GetStatus": {
                "operationId": "payment_status",
                "parameters": { "payment_id": "$response.body#/data/payment_id" },
                "description": "The new payment's status.",
            },
            "GetDetail": {
                "operationId": "payment_detail",
                "parameters": { "payment_id": "$response.body#/data/payment_id" },
                "description": "The new payment's detail.",
            },
            "Refund": {
                "operationId": "refund_payment",
                "parameters": { "payment_id": "$response.body#/data/payment_id" },
                "description": "Refund it once it is paid.",
            },
            "GetCheckout": {
                "operationId": "checkout",
                "parameters": { "payment_no": "$response.body#/data/payment_no" },
                "description": "What the member's checkout page shows.",
            },
        });
        if settings.sandbox_secret.is_some() {
            success["links"]["SandboxPage"] = json!({
                "operationId": "sandbox_page",
                "parameters": { "payment_no": "$response.body#/data/payment_no" },
                "description": "The sandbox gateway's pay page for it.",
            });
        }
    }
    if spec.idempotent {
        success["headers"]["Idempotent-Replayed"] = header_ref("Idempotent-Replayed");
    }
    let common: &[(u16, &[u32])] = &[(405, &[40501]), (500, &[50001]), (503, &[50301])];
    for (status, codes) in spec.errors.iter().chain(common) {
        let text: Vec<String> = ERROR_CODES
            .iter()
            .find(|(s, _)| s == status)
            .map(|(_, all)| {
                all.iter()
                    .filter(|(c, _)| codes.contains(c))
                    .map(|(c, t)| {
                        if *c == 0 {
                            (*t).to_owned()
                        } else {
                            format!("{c}: {t}")
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut response = json!({ "description": text.join("; ") });
        if codes.len() == 1 && codes[0] == 0 {
            response["content"] = json!({ "text/plain": { "schema": { "type": "string" } } });
        } else {
            let error = json!({
                "allOf": [named("Error"), { "properties": { "code": { "enum": codes } } }],
            });
            let schema = if spec.id == "create_payment" && *status == 409 {
                json!({ "oneOf": [error, named("LivePaymentExists")] })
            } else {
                error
            };
            let example = example_error(spec, codes[0]);
            response["content"] =
                json!({ "application/json": { "schema": schema, "example": example } });
        }
        if *status == 429 {
            response["headers"]["Retry-After"] = header_ref("Retry-After");
        }
        if *status == 405 {
            response["headers"]["Allow"] = header_ref("Allow");
        }
        responses.insert(status.to_string(), response);
    }
    if spec.path.starts_with("/sandbox/") {
        // A payment number that is not one path segment reaches no route: the JSON 404.
        if let Some(r404) = responses.get_mut("404") {
            r404["content"]["application/json"] = json!({
                "schema": { "allOf": [named("Error"), { "properties": { "code": { "enum": [40401] } } }] },
            });
        }
    }
    if spec.id == "readyz" {
        responses.insert(
            "503".into(),
            json!({
                "description": "not ready (50301): database or bus unreachable, or the projections lag; data says which",
                "content": { "application/json": { "schema": {
                    "type": "object",
                    "required": ["code", "message", "data"],
                    "properties": {
                        "code": { "type": "integer", "const": 50301 },
                        "message": { "type": "string" },
                        "data": { "oneOf": [named("Readiness"), { "type": "null" }] },
                    },
                } } },
            }),
        );
    }
    for (_, response) in responses.iter_mut() {
        response["headers"]["X-Request-Id"] = header_ref("X-Request-Id");
        if get {
            response["headers"]["X-Ledger-Position"] = header_ref("X-Ledger-Position");
        }
    }
}

/// What the service answers with this code on this operation, for the examples (real
/// messages, in English).
fn example_error(spec: &Operation, code: u32) -> Value {
    let roles = match spec.id {
        "create_payment" => "client or operator",
        "refund_payment" => "operator",
        "payment_status" | "payment_history" => "client or operator or auditor or finance",
        "list_payments" | "payment_detail" => "operator or auditor or finance",
        "payment_events" => "auditor or operator",
        "ledger_totals" | "ledger_daily" | "reconcile_settlement" => "finance",
        "portal_link" => "client",
        _ => "auditor",
    };
    let message = match (code, spec.id) {
        (40001, "reconcile_settlement") => {
            "Content-Type must be text/csv (the settlement file)".to_owned()
        }
        (40001, "list_payments" | "payment_history") => {
            "size must be an integer from 1 to 100".to_owned()
        }
        (40001, _) if spec.method == "post" => {
            "request body is empty; expected a JSON object".to_owned()
        }
        (40001, _) => "unknown query parameter \"pgae\"".to_owned(),
        (40101, "console_sign_in") => "wrong key id or secret".to_owned(),
        (40101, "console_session" | "console_sign_out") => {
            "no live console session (expired or signed out); sign in again".to_owned()
        }
        (40101, "portal_session") => "the portal link has expired or is not valid".to_owned(),
        (40101, _) => "bad signature".to_owned(),
        (40102, _) => "timestamp is more than 300 s from the server clock".to_owned(),
        (40301, "console_sign_in") => "client keys cannot sign in to the console".to_owned(),
        (40301, "console_session" | "console_sign_out") => {
            "missing or wrong X-CSRF-Token for this session".to_owned()
        }
        (40301, "portal_session") => "only a member portal link has a portal session".to_owned(),
        (40301, "gateway_notify") => {
            "only the gateway itself may send its notifications".to_owned()
        }
        (40301, _) => format!("the key's role may not do this (needs {roles})"),
        (40401, _) => "no such payment".to_owned(),
        (40501, _) => "method not allowed on this route".to_owned(),
        (40901, "signed_digest") => {
            "the log fails verification at position 7: refusing to sign it".to_owned()
        }
        (40901, "create_payment") => "order already has a live payment".to_owned(),
        (40901, _) => "only a successful payment can be refunded; this one is pending".to_owned(),
        (40902, _) => "refund 500.00 exceeds the refundable amount 100.00".to_owned(),
        (40903, _) => "idempotency key reused with a different body".to_owned(),
        (41301, "reconcile_settlement") => "request body is larger than 8388608 bytes".to_owned(),
        (41301, _) => "request body is larger than 65536 bytes".to_owned(),
        (42901, "console_sign_in") => "too many failed sign-ins; try again later".to_owned(),
        (42901, _) => {
            "a verification of the whole log is already running; try again shortly".to_owned()
        }
        (50001, _) => "internal error".to_owned(),
        _ => "service temporarily unavailable; try again shortly".to_owned(),
    };
    let data = if (code, spec.id) == (40901, "create_payment") {
        json!({ "payment_id": "0193a5b2-c3d4-7e8f-9a0b-1c2d3e4f5a6b" })
    } else {
        Value::Null
    };
    json!({ "code": code, "message": message, "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_success_answer_has_a_real_example() {
        let examples: Value = serde_json::from_str(EXAMPLES).expect("examples.json is JSON");
        for op in OPERATIONS {
            if let Answer::Data(name) = op.answer {
                assert!(examples.get(name).is_some(), "no example for {name}");
                assert_eq!(examples[name]["code"], 0, "{name}");
            }
        }
    }

    #[test]
    fn amount_patterns_bound_the_scale_and_the_size() {
        assert_eq!(
            amount_pattern(2),
            "^([1-9][0-9]{0,11}(\\.[0-9]{1,2}0*)?|1000000000000(\\.0+)?|0\\.[0-9]{0,1}[1-9]0*)$"
        );
        assert_eq!(
            amount_pattern(0),
            "^([1-9][0-9]{0,11}(\\.0+)?|1000000000000(\\.0+)?)$"
        );
    }
}
