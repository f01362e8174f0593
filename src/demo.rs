//! `ledger demo`: drives realistic traffic against a running service, then shows the totals,
//! verifies the chain and reconciles a settlement file made of what the gateways "settled".
//!
//! The traffic, per ten payments (methods and currencies rotate): six paid, one of them also
//! notified a second time (a duplicate the ledger must ignore); one failed by its gateway; one
//! left pending; two paid and then refunded — one partially, one in full. Every request is
//! signed, as a real client's and gateway's are.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::client::Client;
use crate::domain::{Currency, PaymentMethod};
use crate::reconcile::{self, FileRow, Format, Kind};

/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// Longest the demo waits for the gateway to confirm its refunds.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

pub struct Demo {
    /// Signs as an API key allowed to create, refund and read (admin in development).
    pub client: Client,
    /// Signs as each gateway (its notifications).
    pub gateways: Vec<(PaymentMethod, Client)>,
    /// The service's database, for reconciliation.
    pub pool: PgPool,
    pub payments: usize,
    /// Where the settlement file is written.
    pub settlement: PathBuf,
    pub progress: bool,
}

/// What the demo did and found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub created: usize,
    pub paid: usize,
    pub failed: usize,
    pub pending: usize,
    pub duplicates: usize,
    pub refunds: usize,
    pub chain_ok: bool,
    pub totals_match: bool,
    pub reconciled: bool,
    pub errors: Vec<String>,
}

/// What happened to one payment.
#[derive(Default)]
struct Outcome {
    paid: Option<FileRow>,
    failed: bool,
    pending: bool,
    duplicate: bool,
    refunded: Vec<String>,
    errors: Vec<String>,
}

fn currency_for(i: usize) -> Currency {
    let code = ["CNY", "CNY", "USD", "JPY"][i % 4];
    Currency::from_code(code).expect("the demo's currencies are known")
}

/// A pseudo-random but repeatable amount in the currency's scale.
fn amount_for(i: usize, currency: Currency) -> Decimal {
    let minor = 100 + (i as i64 * 7919) % 99_900;
    let mut a = Decimal::new(minor, 2);
    a.rescale(currency.minor_unit());
    if a.is_zero() {
        Decimal::ONE
    } else {
        a
    }
}

fn scaled(a: Decimal, currency: Currency) -> Decimal {
    a.round_dp_with_strategy(
        currency.minor_unit(),
        rust_decimal::RoundingStrategy::ToZero,
    )
}

async fn post(client: &Client, path: &str, body: &Value) -> Result<Value, String> {
    let a = client
        .send("POST", path, Some(&body.to_string()), &[])
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    if a.status >= 400 {
        return Err(format!("{path}: {} {}", a.status, a.body));
    }
    Ok(a.body["data"].clone())
}

async fn one_payment(demo: &Demo, i: usize) -> Outcome {
    let mut out = Outcome::default();
    match drive(demo, i, &mut out).await {
        Ok(()) => {}
        Err(e) => out.errors.push(e),
    }
    out
}

async fn drive(demo: &Demo, i: usize, out: &mut Outcome) -> Result<(), String> {
    let (method, gateway) = &demo.gateways[i % demo.gateways.len()];
    let currency = currency_for(i);
    let amount = amount_for(i, currency);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let created = post(
        &demo.client,
        "/api/v1/payments/create",
        &json!({
            "amount": amount.to_string(),
            "currency": currency.code(),
            "payment_method": method.name(),
            "order_id": format!("DEMO-{run}"),
            "user_id": format!("demo-user-{}", i % 17),
        }),
    )
    .await?;
    let payment_id = created["payment_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let payment_no = created["payment_no"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let notify_path = format!("/api/v1/gateways/{}/notify", method.name());
    let scenario = i % 10;
    if scenario == 7 {
        out.pending = true;
        return Ok(());
    }
    let trade_no = format!("T{run}");
    let notice = json!({
        "payment_no": payment_no,
        "callback_no": format!("CB{run}"),
        "status": if scenario == 6 { "failed" } else { "success" },
        "amount": amount.to_string(),
        "gateway_trade_no": trade_no,
    });
    post(gateway, &notify_path, &notice).await?;
    if scenario == 6 {
        out.failed = true;
        return Ok(());
    }
    if scenario == 5 {
        let again = post(gateway, &notify_path, &notice).await?;
        if again["duplicate"] != json!(true) {
            return Err(format!(
                "a repeated notification was not a duplicate: {again}"
            ));
        }
        out.duplicate = true;
    }
    out.paid = Some(FileRow {
        line: 0,
        payment_no: payment_no.clone(),
        gateway_trade_no: trade_no,
        kind: Kind::Payment,
        amount,
        // A 0.6 % gateway fee, truncated to the currency's scale.
        fee: scaled(amount * Decimal::new(6, 3), currency),
        settled_at: chrono::Utc::now(),
    });
    let refund_path = format!("/api/v1/payments/{payment_id}/refund");
    let refunds: Vec<Decimal> = match scenario {
        8 => vec![scaled(amount * Decimal::new(3, 1), currency)],
        9 => vec![amount],
        _ => vec![],
    };
    for r in refunds.into_iter().filter(|r| !r.is_zero()) {
        let data = post(
            &demo.client,
            &refund_path,
            &json!({ "amount": r.to_string(), "reason": "customer request" }),
        )
        .await?;
        out.refunded.push(payment_id.clone());
        let _ = data;
    }
    Ok(())
}

/// Waits until no refund of these payments is still processing; returns the settled refunds
/// as settlement lines.
async fn settled_refunds(demo: &Demo, payment_ids: &[String]) -> Result<Vec<FileRow>, String> {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    let mut rows = Vec::new();
    for id in payment_ids {
        loop {
            let a = demo
                .client
                .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
                .await
                .map_err(|e| e.to_string())?;
            let refunds = a.body["data"]["refunds"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if refunds.iter().any(|r| r["status"] == "processing") {
                if tokio::time::Instant::now() > deadline {
                    return Err(format!(
                        "refunds of {id} still processing after {SETTLE_WAIT:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let payment_no = a.body["data"]["payment_no"].as_str().unwrap_or_default();
            for r in refunds.iter().filter(|r| r["status"] == "success") {
                let amount = r["amount"]
                    .as_str()
                    .and_then(|s| s.parse::<Decimal>().ok())
                    .unwrap_or_default();
                rows.push(FileRow {
                    line: 0,
                    payment_no: payment_no.to_owned(),
                    gateway_trade_no: r["refund_no"].as_str().unwrap_or_default().to_owned(),
                    kind: Kind::Refund,
                    amount,
                    fee: Decimal::ZERO,
                    settled_at: chrono::Utc::now(),
                });
            }
            break;
        }
    }
    rows.dedup_by(|a, b| a.gateway_trade_no == b.gateway_trade_no);
    Ok(rows)
}

/// Runs the demo and prints what it saw to `out`.
pub async fn run(demo: &Demo, out: &mut dyn Write) -> anyhow::Result<Summary> {
    // Reconcile only what settled from now on: the database may hold earlier activity.
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    let bar = if demo.progress {
        ProgressBar::new(demo.payments as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "demo {bar:40.green/blue} {pos}/{len} payments {per_sec} eta {eta}",
        )
        .expect("the template is valid"),
    );
    let outcomes: Vec<Outcome> = futures::stream::iter(0..demo.payments)
        .map(|i| {
            let bar = bar.clone();
            async move {
                let o = one_payment(demo, i).await;
                bar.inc(1);
                o
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();

    let mut summary = Summary {
        created: demo.payments,
        ..Summary::default()
    };
    let mut file: Vec<FileRow> = Vec::new();
    let mut refunded: Vec<String> = Vec::new();
    for o in outcomes {
        summary.errors.extend(o.errors);
        if let Some(row) = o.paid {
            summary.paid += 1;
            file.push(row);
        } else if o.failed {
            summary.failed += 1;
        } else if o.pending {
            summary.pending += 1;
        }
        summary.duplicates += usize::from(o.duplicate);
        summary.refunds += o.refunded.len();
        refunded.extend(o.refunded);
    }
    refunded.sort();
    refunded.dedup();
    match settled_refunds(demo, &refunded).await {
        Ok(rows) => file.extend(rows),
        Err(e) => summary.errors.push(e),
    }
    writeln!(
        out,
        "demo: {} payments created: {} paid ({} notified twice), {} failed, {} pending; {} refunds",
        summary.created,
        summary.paid,
        summary.duplicates,
        summary.failed,
        summary.pending,
        summary.refunds
    )?;
    for e in summary.errors.iter().take(10) {
        writeln!(out, "  error: {e}")?;
    }

    let totals = demo
        .client
        .send("GET", "/api/v1/ledger/totals", None, &[])
        .await?;
    summary.totals_match = totals.body["data"]["matches"] == json!(true);
    writeln!(out, "\ntotals (from the log and from the read tables):")?;
    for c in totals.body["data"]["currencies"]
        .as_array()
        .into_iter()
        .flatten()
    {
        writeln!(
            out,
            "  {}  paid {:>4} payments {:>14}  refunded {:>14}  net {:>14}  matches {}",
            c["currency"].as_str().unwrap_or("?"),
            c["paid_count"],
            c["paid_amount"].as_str().unwrap_or("?"),
            c["refunded_amount"].as_str().unwrap_or("?"),
            c["net_amount"].as_str().unwrap_or("?"),
            c["matches"],
        )?;
    }

    let verify = demo
        .client
        .send("GET", "/api/v1/audit/verify", None, &[])
        .await?;
    let v = &verify.body["data"];
    summary.chain_ok = v["ok"] == json!(true);
    writeln!(
        out,
        "\nchain: {} events checked, head {}, {}",
        v["events_checked"],
        v["head_position"],
        if summary.chain_ok { "ok" } else { "BROKEN" }
    )?;

    reconcile::write_file(&demo.settlement, &file)?;
    writeln!(
        out,
        "\nreconciling the settlement file {} ({} lines):",
        demo.settlement.display(),
        file.len()
    )?;
    let status = reconcile::run(
        &demo.pool,
        &demo.settlement,
        Format::Table,
        Some(started),
        None,
        out,
    )
    .await?;
    summary.reconciled = status == 0;
    Ok(summary)
}

impl Summary {
    /// The demo's exit status: 0 when everything it did is accounted for.
    pub fn exit_code(&self) -> i32 {
        if self.errors.is_empty() && self.chain_ok && self.totals_match && self.reconciled {
            0
        } else {
            1
        }
    }
}
