//! `ledger demo`: drives realistic traffic against a running service, then checks that the
//! ledger agrees with what it did: the totals of its own payments, the hash chain, and a
//! reconciliation of a settlement file made of what the gateways "settled".
//!
//! The traffic, per ten payments (methods and currencies rotate): six paid, one of them also
//! notified a second time (a duplicate the ledger must ignore); one failed by its gateway; one
//! left pending; two paid and then refunded — one partially, one in full. Every request is
//! signed, as a real client's and gateway's are.
//!
//! The ledger may hold other traffic (the README's examples, an earlier demo, other clients
//! while it runs), so every comparison is scoped to what this run created: its totals are
//! summed from the details of its own payments, and reconciliation loads only its own
//! payments and refunds. The ledger-wide checks (the chain, the log against the read tables)
//! are whole-ledger by nature and must hold whatever else is there. This module reads the
//! ledger only through the API and the read-side loaders; it contains no SQL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
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
/// The line the demo ends with when everything it checked agrees.
pub const AGREES: &str = "everything agrees";

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
    /// The totals of this run's own payments agree with what it did, and the ledger's totals
    /// for the run's window agree between the log and the read tables.
    pub totals_match: bool,
    /// Reconciliation of this run's own payments and refunds found no difference.
    pub reconciled: bool,
    pub errors: Vec<String>,
}

/// What happened to one payment, as the demo did it.
#[derive(Default)]
struct Outcome {
    /// Id and payment_no, once created.
    payment: Option<(String, String)>,
    currency: Option<Currency>,
    amount: Decimal,
    /// The settlement line of a paid payment.
    paid: Option<FileRow>,
    failed: bool,
    pending: bool,
    duplicate: bool,
    /// Refunds the ledger accepted, by amount.
    refunded: Vec<Decimal>,
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

fn decimal(v: &Value) -> Decimal {
    v.as_str()
        .and_then(|s| s.parse::<Decimal>().ok())
        .unwrap_or_default()
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
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

async fn get(client: &Client, path: &str) -> Result<Value, String> {
    let a = client
        .send("GET", path, None, &[])
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    if a.status >= 400 {
        return Err(format!("{path}: {} {}", a.status, a.body));
    }
    Ok(a.body["data"].clone())
}

async fn one_payment(demo: &Demo, i: usize) -> Outcome {
    let mut out = Outcome::default();
    if let Err(e) = drive(demo, i, &mut out).await {
        out.errors.push(e);
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
    out.payment = Some((payment_id.clone(), payment_no.clone()));
    out.currency = Some(currency);
    out.amount = amount;
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
    out.paid = Some(FileRow {
        line: 0,
        payment_no: payment_no.clone(),
        gateway_trade_no: trade_no,
        kind: Kind::Payment,
        amount,
        // A 0.6 % gateway fee, truncated to the currency's scale.
        fee: scaled(amount * Decimal::new(6, 3), currency),
        settled_at: Utc::now(),
    });
    if scenario == 5 {
        let again = post(gateway, &notify_path, &notice).await?;
        if again["duplicate"] != json!(true) {
            return Err(format!(
                "a repeated notification was not a duplicate: {again}"
            ));
        }
        out.duplicate = true;
    }
    let refund_path = format!("/api/v1/payments/{payment_id}/refund");
    let refunds: Vec<Decimal> = match scenario {
        8 => vec![scaled(amount * Decimal::new(3, 1), currency)],
        9 => vec![amount],
        _ => vec![],
    };
    for r in refunds.into_iter().filter(|r| !r.is_zero()) {
        post(
            &demo.client,
            &refund_path,
            &json!({ "amount": r.to_string(), "reason": "customer request" }),
        )
        .await?;
        out.refunded.push(r);
    }
    Ok(())
}

/// One payment's detail once none of its refunds is still processing (bounded by `deadline`).
async fn settled_detail(
    client: &Client,
    id: &str,
    deadline: tokio::time::Instant,
) -> Result<Value, String> {
    loop {
        let d = get(client, &format!("/api/v1/payments/{id}")).await?;
        let processing = d["refunds"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["status"] == "processing"));
        if !processing {
            return Ok(d);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "refunds of {id} still processing after {SETTLE_WAIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sums of one currency: payments paid (including those refunded later), money paid, money
/// refunded. The same measures as `/ledger/totals`, over this run's payments only.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    paid_count: usize,
    paid: Decimal,
    refunded: Decimal,
}

/// Runs the demo and prints what it saw to `out`; the last line is [`AGREES`] when
/// everything agrees.
pub async fn run(demo: &Demo, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let started = Utc::now();
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

    let mut summary = Summary::default();
    let mut file: Vec<FileRow> = Vec::new();
    let mut expected: BTreeMap<String, Sums> = BTreeMap::new();
    for o in &outcomes {
        summary.errors.extend(o.errors.iter().cloned());
        summary.created += usize::from(o.payment.is_some());
        if let Some(row) = &o.paid {
            summary.paid += 1;
            file.push(row.clone());
        } else if o.failed {
            summary.failed += 1;
        } else if o.pending {
            summary.pending += 1;
        }
        summary.duplicates += usize::from(o.duplicate);
        summary.refunds += o.refunded.len();
        if let (Some(currency), Some(_)) = (o.currency, &o.paid) {
            let s = expected.entry(currency.code().to_owned()).or_default();
            s.paid_count += 1;
            s.paid += o.amount;
            s.refunded += o.refunded.iter().copied().sum::<Decimal>();
        }
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

    // The ledger's view of this run's payments, once the gateway has confirmed the refunds.
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    let ids: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.payment.as_ref().map(|(id, _)| id.as_str()))
        .collect();
    let details: Vec<Result<Value, String>> = futures::stream::iter(ids)
        .map(|id| settled_detail(&demo.client, id, deadline))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut held: BTreeMap<String, Sums> = BTreeMap::new();
    for d in details {
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                summary.errors.push(e);
                continue;
            }
        };
        let payment_no = d["payment_no"].as_str().unwrap_or_default();
        let refunds = d["refunds"].as_array().cloned().unwrap_or_default();
        for r in refunds.iter().filter(|r| r["status"] == "success") {
            file.push(FileRow {
                line: 0,
                payment_no: payment_no.to_owned(),
                gateway_trade_no: r["refund_no"].as_str().unwrap_or_default().to_owned(),
                kind: Kind::Refund,
                amount: decimal(&r["amount"]),
                fee: Decimal::ZERO,
                settled_at: Utc::now(),
            });
        }
        if matches!(d["status"].as_str(), Some("success" | "refunded")) {
            let s = held
                .entry(d["currency"].as_str().unwrap_or("?").to_owned())
                .or_default();
            s.paid_count += 1;
            s.paid += decimal(&d["amount"]);
            s.refunded += decimal(&d["refunded_amount"]);
        }
    }
    for e in summary.errors.iter().take(10) {
        writeln!(out, "  error: {e}")?;
    }
    // One second of margin on each side: the API filters whole instants, ours carry
    // fractions.
    let ended = Utc::now() + chrono::Duration::seconds(1);
    let window = (started - chrono::Duration::seconds(1), ended);

    writeln!(
        out,
        "\ntotals of this run's payments (what the demo did / what the ledger holds):"
    )?;
    let own_agree = expected == held;
    let currencies: std::collections::BTreeSet<&String> =
        expected.keys().chain(held.keys()).collect();
    for c in currencies {
        let e = expected.get(c).copied().unwrap_or_default();
        let h = held.get(c).copied().unwrap_or_default();
        writeln!(
            out,
            "  {c}  paid {:>4} / {:<4} payments  {:>14} / {:<14}  refunded {:>14} / {:<14}  {}",
            e.paid_count,
            h.paid_count,
            e.paid,
            h.paid,
            e.refunded,
            h.refunded,
            if e == h { "agree" } else { "DIFFER" },
        )?;
    }

    let totals = get(
        &demo.client,
        &format!(
            "/api/v1/ledger/totals?start_time={}&end_time={}",
            time(window.0),
            time(window.1)
        ),
    )
    .await;
    let window_match = match &totals {
        Ok(t) => {
            writeln!(
                out,
                "\nledger totals from {} to {} (the log and the read tables; other traffic in this window counts too):",
                time(window.0),
                time(window.1)
            )?;
            for c in t["currencies"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "  {}  paid {:>4} payments {:>14}  refunded {:>14}  net {:>14}  log = read tables: {}",
                    c["currency"].as_str().unwrap_or("?"),
                    c["paid_count"],
                    c["paid_amount"].as_str().unwrap_or("?"),
                    c["refunded_amount"].as_str().unwrap_or("?"),
                    c["net_amount"].as_str().unwrap_or("?"),
                    c["matches"],
                )?;
            }
            t["matches"] == json!(true)
        }
        Err(e) => {
            summary.errors.push(e.clone());
            writeln!(out, "\nledger totals: cannot read them: {e}")?;
            false
        }
    };
    summary.totals_match = own_agree && window_match;

    match get(&demo.client, "/api/v1/audit/verify").await {
        Ok(v) => {
            summary.chain_ok = v["ok"] == json!(true);
            writeln!(
                out,
                "\nchain (the whole log): {} events checked, head {}, {}",
                v["events_checked"],
                v["head_position"],
                if summary.chain_ok { "ok" } else { "BROKEN" }
            )?;
        }
        Err(e) => {
            summary.errors.push(e.clone());
            writeln!(out, "\nchain: cannot verify it: {e}")?;
        }
    }

    reconcile::write_file(&demo.settlement, &file)?;
    writeln!(
        out,
        "\nreconciling the {} payments and {} refunds this run created (settlement file {}, {} lines):",
        summary.created,
        summary.refunds,
        demo.settlement.display(),
        file.len()
    )?;
    let payment_nos: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.payment.as_ref().map(|(_, no)| no.clone()))
        .collect();
    let (payments, refunds) =
        crate::projections::settled::load_named(&demo.pool, &payment_nos).await?;
    let report = reconcile::reconcile(&file, &payments, &refunds);
    reconcile::render(&report, Format::Table, out)?;
    summary.reconciled = report.all_match();

    let base = demo.client.base();
    writeln!(out, "\nwhere to look next:")?;
    writeln!(
        out,
        "  this run's payments   {base}/console/payments?start_time={}&end_time={}",
        time(window.0),
        time(window.1)
    )?;
    if let Some((id, _)) = outcomes.iter().find_map(|o| o.payment.as_ref()) {
        writeln!(out, "  one of them           {base}/console/payments/{id}")?;
    }
    writeln!(
        out,
        "                        (sign in with an API key: in development dev-admin, its secret in .ledger-data/credentials.env)"
    )?;
    writeln!(
        out,
        "  the chain, offline    ledger verify   (and `ledger verify --digest FILE` against a saved digest)"
    )?;
    writeln!(out, "  the metrics           {base}/metrics")?;
    writeln!(out)?;
    let mut disagreements = Vec::new();
    if !summary.errors.is_empty() {
        disagreements.push(format!("{} request(s) failed", summary.errors.len()));
    }
    if !own_agree {
        disagreements.push("this run's totals differ from what it did".to_owned());
    }
    if !window_match {
        disagreements.push("the log and the read tables differ".to_owned());
    }
    if !summary.chain_ok {
        disagreements.push("the chain does not verify".to_owned());
    }
    if !summary.reconciled {
        disagreements.push("reconciliation found differences".to_owned());
    }
    if disagreements.is_empty() {
        writeln!(out, "{AGREES}")?;
    } else {
        writeln!(out, "NOT everything agrees: {}", disagreements.join("; "))?;
    }
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
