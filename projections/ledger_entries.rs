//! `ledger_entries`: double-entry postings. Each money-moving event posts lines that sum to
//! zero in its currency (debits positive, credits negative), so a trial balance over any set
//! of whole events nets to zero.
//!
//! Chart of accounts (README "Chart of accounts"):
//! - `gateway_clearing` (asset): money the gateways hold for us;
//! - `merchant_revenue` (income): what the merchant has earned;
//! - `refunds_payable` (liability): refunds promised and not yet confirmed.
//!
//! | event            | debit              | credit             |
//! |------------------|--------------------|--------------------|
//! | paid             | gateway_clearing   | merchant_revenue   |
//! | refund_requested | merchant_revenue   | refunds_payable    |
//! | refunded         | refunds_payable    | gateway_clearing   |
//! | refund_failed    | refunds_payable    | merchant_revenue   |

use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::{Currencies, Decoded};
use crate::domain::events::PaymentEvent;

pub const GATEWAY_CLEARING: &str = "gateway_clearing";
pub const MERCHANT_REVENUE: &str = "merchant_revenue";
pub const REFUNDS_PAYABLE: &str = "refunds_payable";

/// The postings of one event: (account, signed amount). Empty for events that move no money.
pub fn postings(
    event: &PaymentEvent,
    payment_amount: Option<Decimal>,
) -> Vec<(&'static str, Decimal)> {
    let pair = |debit: &'static str, credit: &'static str, amount: Decimal| {
        vec![(debit, amount), (credit, -amount)]
    };
    match event {
        PaymentEvent::Paid(_) => match payment_amount {
            Some(a) => pair(GATEWAY_CLEARING, MERCHANT_REVENUE, a),
            None => vec![],
        },
        PaymentEvent::RefundRequested(r) => pair(MERCHANT_REVENUE, REFUNDS_PAYABLE, r.amount),
        PaymentEvent::Refunded(r) => pair(REFUNDS_PAYABLE, GATEWAY_CLEARING, r.amount),
        PaymentEvent::RefundFailed(r) => pair(REFUNDS_PAYABLE, MERCHANT_REVENUE, r.amount),
        _ => vec![],
    }
}

pub async fn apply(
    conn: &mut PgConnection,
    events: &[Decoded<'_>],
    currencies: &Currencies,
    table: &str,
) -> Result<(), sqlx::Error> {
    let mut event_id = Vec::new();
    let mut line: Vec<i16> = Vec::new();
    let mut position = Vec::new();
    let mut payment_id = Vec::new();
    let mut account = Vec::new();
    let mut currency = Vec::new();
    let mut amount = Vec::new();
    let mut entry_type = Vec::new();
    let mut at = Vec::new();
    for d in events {
        let e = d.stored;
        for (i, (acct, value)) in postings(&d.event, currencies.get(&e.stream_id).map(|c| c.1))
            .into_iter()
            .enumerate()
        {
            event_id.push(e.event_id);
            line.push(i as i16);
            position.push(e.position);
            payment_id.push(e.stream_id);
            account.push(acct);
            currency.push(
                currencies
                    .get(&e.stream_id)
                    .map(|c| c.0.clone())
                    .unwrap_or_default(),
            );
            amount.push(value);
            entry_type.push(e.event_type.as_str());
            at.push(e.recorded_at);
        }
    }
    if event_id.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (event_id, line, position, payment_id, account, currency, amount, \
         entry_type, recorded_at) SELECT * FROM UNNEST($1::uuid[], $2::smallint[], $3::bigint[], \
         $4::uuid[], $5::text[], $6::text[], $7::numeric[], $8::text[], $9::timestamptz[]) \
         ON CONFLICT DO NOTHING"
    ))
    .bind(&event_id)
    .bind(&line)
    .bind(&position)
    .bind(&payment_id)
    .bind(&account)
    .bind(&currency)
    .bind(&amount)
    .bind(&entry_type)
    .bind(&at)
    .execute(conn)
    .await?;
    Ok(())
}
