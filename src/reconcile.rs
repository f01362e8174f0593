//! `ledger reconcile --settlement FILE.csv`: matches a gateway's settlement file against the
//! ledger and reports what does not agree.
//!
//! The file (a header line is required; column order is free):
//!
//! | column | meaning |
//! |---|---|
//! | `payment_no` | the ledger's payment_no |
//! | `gateway_trade_no` | the gateway's trade number; for a refund line, the refund_no |
//! | `type` | `payment` or `refund` |
//! | `amount` | decimal in major units (yuan, not fen), exact: `100.50` |
//! | `fee` | the gateway's fee, decimal, ≥ 0 (reported, not matched) |
//! | `settled_at` | RFC 3339 time |
//!
//! Every line lands in exactly one category: `matched`, `missing_in_ledger` (the ledger has no
//! such payment or refund), `amount_mismatch`, `status_mismatch` (the gateway settled what the
//! ledger holds as pending, failed or processing), or `duplicate_in_file` (the same payment or
//! refund settled twice). What the ledger holds as settled (a successful payment, a refund
//! confirmed) and no line names is `missing_in_file`. `--start-time/--end-time` bound the
//! ledger side to the file's period (payment time, refund confirmation time).
//!
//! The matching is a pure function ([`reconcile`]) over the file's rows and the ledger's rows.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use crate::domain::events::RefundStatus;
use crate::domain::money::parse_decimal;
use crate::domain::PaymentStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Payment,
    Refund,
}

/// One line of a settlement file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileRow {
    /// 1-based line number in the file (the header is line 1).
    pub line: usize,
    pub payment_no: String,
    pub gateway_trade_no: String,
    pub kind: Kind,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub fee: Decimal,
    pub settled_at: DateTime<Utc>,
}

pub use crate::projections::settled::{LedgerPayment, LedgerRefund};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Matched,
    MissingInLedger,
    MissingInFile,
    AmountMismatch,
    StatusMismatch,
    DuplicateInFile,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Matched,
        Category::MissingInLedger,
        Category::MissingInFile,
        Category::AmountMismatch,
        Category::StatusMismatch,
        Category::DuplicateInFile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Matched => "matched",
            Category::MissingInLedger => "missing_in_ledger",
            Category::MissingInFile => "missing_in_file",
            Category::AmountMismatch => "amount_mismatch",
            Category::StatusMismatch => "status_mismatch",
            Category::DuplicateInFile => "duplicate_in_file",
        }
    }
}

/// One finding: a file line, or a ledger item no line names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub category: Category,
    pub kind: Kind,
    /// The file line, when the item comes from the file.
    pub line: Option<usize>,
    pub payment_no: String,
    /// For refunds, the refund_no.
    pub reference: String,
    pub file_amount: Option<String>,
    pub ledger_amount: Option<String>,
    pub ledger_status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub lines: usize,
    pub counts: Vec<(Category, usize)>,
    #[serde(with = "rust_decimal::serde::str")]
    pub settled_payments: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub settled_refunds: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub fees: Decimal,
    /// Everything but `matched`, file lines first (by line), then ledger items.
    pub problems: Vec<Item>,
}

impl Report {
    pub fn count(&self, category: Category) -> usize {
        self.counts
            .iter()
            .find(|(c, _)| *c == category)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    pub fn all_match(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A settlement file that cannot be read; names the line.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("the header must name the columns payment_no, gateway_trade_no, type, amount, fee, settled_at (missing: {0})")]
    Header(String),
    #[error("more than {0} lines (LEDGER_SETTLEMENT_LINES_MAX)")]
    TooLong(usize),
}

const COLUMNS: [&str; 6] = [
    "payment_no",
    "gateway_trade_no",
    "type",
    "amount",
    "fee",
    "settled_at",
];

/// Parses a settlement file. Amounts are exact decimals; any malformed line stops the parse
/// with its line number (a reconciliation over a half-read file would mislead). At most
/// `lines_max` lines are read, so a wrong file cannot exhaust memory.
pub fn parse_file<R: std::io::Read>(
    reader: R,
    lines_max: usize,
) -> Result<Vec<FileRow>, FileError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = csv
        .headers()
        .map_err(|e| FileError::Line {
            line: 1,
            reason: e.to_string(),
        })?
        .clone();
    let index: HashMap<&str, usize> = header.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| !index.contains_key(c))
        .collect();
    if !missing.is_empty() {
        return Err(FileError::Header(missing.join(", ")));
    }
    let col = |name: &str| index[name];
    let mut rows = Vec::new();
    for (i, record) in csv.records().enumerate() {
        let line = i + 2;
        if rows.len() >= lines_max {
            return Err(FileError::TooLong(lines_max));
        }
        let record = record.map_err(|e| FileError::Line {
            line,
            reason: e.to_string(),
        })?;
        let bad = |reason: String| FileError::Line { line, reason };
        let field = |name: &str| record.get(col(name)).unwrap_or("").to_owned();
        let payment_no = field("payment_no");
        if payment_no.is_empty() {
            return Err(bad("payment_no is empty".into()));
        }
        let gateway_trade_no = field("gateway_trade_no");
        let kind = match field("type").as_str() {
            "payment" => Kind::Payment,
            "refund" => Kind::Refund,
            other => return Err(bad(format!("type {other:?} must be payment or refund"))),
        };
        if kind == Kind::Refund && gateway_trade_no.is_empty() {
            return Err(bad(
                "a refund line needs its refund_no in gateway_trade_no".into()
            ));
        }
        let amount = parse_decimal(&field("amount"))
            .map_err(|e| bad(format!("amount: {e}")))
            .and_then(|a| {
                if a > Decimal::ZERO {
                    Ok(a)
                } else {
                    Err(bad("amount must be greater than 0".into()))
                }
            })?;
        let fee_text = field("fee");
        let fee = if fee_text.is_empty() {
            Decimal::ZERO
        } else {
            parse_decimal(&fee_text).map_err(|e| bad(format!("fee: {e}")))?
        };
        if fee < Decimal::ZERO {
            return Err(bad("fee must not be negative".into()));
        }
        let settled_at = DateTime::parse_from_rfc3339(&field("settled_at"))
            .map_err(|e| bad(format!("settled_at is not an RFC 3339 time: {e}")))?
            .with_timezone(&Utc);
        rows.push(FileRow {
            line,
            payment_no,
            gateway_trade_no,
            kind,
            amount,
            fee,
            settled_at,
        });
    }
    Ok(rows)
}

pub fn read_file(path: &Path, lines_max: usize) -> Result<Vec<FileRow>, FileError> {
    let file = std::fs::File::open(path).map_err(|source| FileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_file(std::io::BufReader::new(file), lines_max)
}

/// Matches the file against the ledger. Pure: the same inputs give the same report.
pub fn reconcile(file: &[FileRow], payments: &[LedgerPayment], refunds: &[LedgerRefund]) -> Report {
    let by_no: HashMap<&str, &LedgerPayment> = payments
        .iter()
        .map(|p| (p.payment_no.as_str(), p))
        .collect();
    let refund_by_no: HashMap<&str, &LedgerRefund> =
        refunds.iter().map(|r| (r.refund_no.as_str(), r)).collect();
    let mut seen: HashSet<(Kind, String)> = HashSet::new();
    let mut counts: HashMap<Category, usize> = HashMap::new();
    let mut problems = Vec::new();
    let (mut settled_payments, mut settled_refunds, mut fees) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for row in file {
        fees += row.fee;
        match row.kind {
            Kind::Payment => settled_payments += row.amount,
            Kind::Refund => settled_refunds += row.amount,
        }
        let reference = match row.kind {
            Kind::Payment => row.gateway_trade_no.clone(),
            Kind::Refund => row.gateway_trade_no.clone(),
        };
        let key = match row.kind {
            Kind::Payment => row.payment_no.clone(),
            Kind::Refund => row.gateway_trade_no.clone(),
        };
        let mut item = Item {
            category: Category::Matched,
            kind: row.kind,
            line: Some(row.line),
            payment_no: row.payment_no.clone(),
            reference,
            file_amount: Some(row.amount.normalize().to_string()),
            ledger_amount: None,
            ledger_status: None,
        };
        item.category = if !seen.insert((row.kind, key)) {
            Category::DuplicateInFile
        } else {
            match row.kind {
                Kind::Payment => match by_no.get(row.payment_no.as_str()) {
                    None => Category::MissingInLedger,
                    Some(p) => {
                        item.ledger_amount = Some(p.amount.normalize().to_string());
                        item.ledger_status = Some(p.status.name().to_owned());
                        if p.amount != row.amount {
                            Category::AmountMismatch
                        } else if !matches!(
                            p.status,
                            PaymentStatus::Success | PaymentStatus::Refunded
                        ) {
                            Category::StatusMismatch
                        } else {
                            Category::Matched
                        }
                    }
                },
                Kind::Refund => match refund_by_no.get(row.gateway_trade_no.as_str()) {
                    Some(r) if r.payment_no == row.payment_no => {
                        item.ledger_amount = Some(r.amount.normalize().to_string());
                        item.ledger_status = Some(r.status.name().to_owned());
                        if r.amount != row.amount {
                            Category::AmountMismatch
                        } else if r.status != RefundStatus::Success {
                            Category::StatusMismatch
                        } else {
                            Category::Matched
                        }
                    }
                    _ => Category::MissingInLedger,
                },
            }
        };
        *counts.entry(item.category).or_default() += 1;
        if item.category != Category::Matched {
            problems.push(item);
        }
    }
    for p in payments {
        let settled = matches!(p.status, PaymentStatus::Success | PaymentStatus::Refunded);
        if settled && !seen.contains(&(Kind::Payment, p.payment_no.clone())) {
            *counts.entry(Category::MissingInFile).or_default() += 1;
            problems.push(Item {
                category: Category::MissingInFile,
                kind: Kind::Payment,
                line: None,
                payment_no: p.payment_no.clone(),
                reference: String::new(),
                file_amount: None,
                ledger_amount: Some(p.amount.normalize().to_string()),
                ledger_status: Some(p.status.name().to_owned()),
            });
        }
    }
    for r in refunds {
        if r.status == RefundStatus::Success && !seen.contains(&(Kind::Refund, r.refund_no.clone()))
        {
            *counts.entry(Category::MissingInFile).or_default() += 1;
            problems.push(Item {
                category: Category::MissingInFile,
                kind: Kind::Refund,
                line: None,
                payment_no: r.payment_no.clone(),
                reference: r.refund_no.clone(),
                file_amount: None,
                ledger_amount: Some(r.amount.normalize().to_string()),
                ledger_status: Some(r.status.name().to_owned()),
            });
        }
    }
    Report {
        lines: file.len(),
        counts: Category::ALL
            .iter()
            .map(|c| (*c, counts.get(c).copied().unwrap_or(0)))
            .collect(),
        settled_payments,
        settled_refunds,
        fees,
        problems,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Rows of problems shown in the table format (all of them are in json and csv).
const TABLE_PROBLEMS_MAX: usize = 50;

/// Writes the report in the chosen format.
pub fn render(report: &Report, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let counts: serde_json::Map<String, serde_json::Value> = report
                .counts
                .iter()
                .map(|(c, n)| (c.name().to_owned(), serde_json::json!(n)))
                .collect();
            let value = serde_json::json!({
                "ok": report.all_match(),
                "lines": report.lines,
                "counts": counts,
                "settled_payments": report.settled_payments.to_string(),
                "settled_refunds": report.settled_refunds.to_string(),
                "fees": report.fees.to_string(),
                "problems": report.problems,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&value)?)
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "category",
                "type",
                "line",
                "payment_no",
                "reference",
                "file_amount",
                "ledger_amount",
                "ledger_status",
            ])?;
            for p in &report.problems {
                w.write_record([
                    p.category.name(),
                    match p.kind {
                        Kind::Payment => "payment",
                        Kind::Refund => "refund",
                    },
                    &p.line.map(|l| l.to_string()).unwrap_or_default(),
                    &p.payment_no,
                    &p.reference,
                    p.file_amount.as_deref().unwrap_or(""),
                    p.ledger_amount.as_deref().unwrap_or(""),
                    p.ledger_status.as_deref().unwrap_or(""),
                ])?;
            }
            w.flush()
        }
        Format::Table => {
            writeln!(out, "settlement lines: {}", report.lines)?;
            writeln!(
                out,
                "file sums (as written, all currencies together): payments {}  refunds {}  fees {}",
                report.settled_payments, report.settled_refunds, report.fees
            )?;
            writeln!(out)?;
            writeln!(out, "{:<20} {:>8}", "category", "count")?;
            for (c, n) in &report.counts {
                writeln!(out, "{:<20} {:>8}", c.name(), n)?;
            }
            if !report.problems.is_empty() {
                writeln!(out)?;
                writeln!(
                    out,
                    "{:<18} {:<8} {:>6}  {:<36} {:<36} {:>14} {:>14} {:<10}",
                    "category",
                    "type",
                    "line",
                    "payment_no",
                    "reference",
                    "file",
                    "ledger",
                    "status"
                )?;
                for p in report.problems.iter().take(TABLE_PROBLEMS_MAX) {
                    writeln!(
                        out,
                        "{:<18} {:<8} {:>6}  {:<36} {:<36} {:>14} {:>14} {:<10}",
                        p.category.name(),
                        match p.kind {
                            Kind::Payment => "payment",
                            Kind::Refund => "refund",
                        },
                        p.line.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                        p.payment_no,
                        p.reference,
                        p.file_amount.as_deref().unwrap_or("-"),
                        p.ledger_amount.as_deref().unwrap_or("-"),
                        p.ledger_status.as_deref().unwrap_or("-"),
                    )?;
                }
                if report.problems.len() > TABLE_PROBLEMS_MAX {
                    writeln!(
                        out,
                        "… and {} more (use --format csv or json for all)",
                        report.problems.len() - TABLE_PROBLEMS_MAX
                    )?;
                }
            }
            writeln!(out)?;
            writeln!(
                out,
                "{}",
                if report.all_match() {
                    "reconciliation: everything matches"
                } else {
                    "reconciliation: MISMATCHES found"
                }
            )
        }
    }
}

/// Exit status of `ledger reconcile`: 0 all matched, 1 mismatches, 2 unreadable file.
pub const EXIT_MISMATCH: i32 = 1;
pub const EXIT_BAD_FILE: i32 = 2;

/// `ledger reconcile`: reads the file, loads the ledger, prints the report; returns the exit
/// status.
pub async fn run(
    pool: &PgPool,
    settlement: &Path,
    lines_max: usize,
    format: Format,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let file = match read_file(settlement, lines_max) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("error: settlement file {}: {e}", settlement.display());
            return Ok(EXIT_BAD_FILE);
        }
    };
    let (payments, refunds) = crate::projections::settled::load(pool, start, end).await?;
    let report = reconcile(&file, &payments, &refunds);
    metrics::counter!("ledger_reconcile_mismatches_total").increment(report.problems.len() as u64);
    render(&report, format, out)?;
    Ok(if report.all_match() { 0 } else { EXIT_MISMATCH })
}

/// Writes a settlement file (used by `ledger demo` and tests).
pub fn write_file(path: &Path, rows: &[FileRow]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(COLUMNS)?;
    for r in rows {
        w.write_record([
            r.payment_no.as_str(),
            r.gateway_trade_no.as_str(),
            match r.kind {
                Kind::Payment => "payment",
                Kind::Refund => "refund",
            },
            &r.amount.to_string(),
            &r.fee.to_string(),
            &crate::store::event::format_time(r.settled_at),
        ])?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> DateTime<Utc> {
        "2026-11-01T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_file_longer_than_the_limit_is_refused_and_one_at_the_limit_is_read() {
        let line = "P1,T1,payment,1.00,0,2026-11-01T10:00:00Z\n";
        let file = format!("{}\n{}", COLUMNS.join(","), line.repeat(3));
        assert_eq!(parse_file(file.as_bytes(), 3).unwrap().len(), 3);
        let err = parse_file(file.as_bytes(), 2).unwrap_err();
        assert!(matches!(err, FileError::TooLong(2)), "{err}");
        assert!(err.to_string().contains("LEDGER_SETTLEMENT_LINES_MAX"));
    }

    #[test]
    fn every_kind_of_difference_lands_in_its_category() {
        let file = "payment_no,gateway_trade_no,type,amount,fee,settled_at\n\
            P1,T1,payment,100.00,0.60,2026-11-01T10:00:00Z\n\
            P2,T2,payment,50,0.30,2026-11-01T10:00:00Z\n\
            P3,T3,payment,10.00,0,2026-11-01T10:00:00Z\n\
            P9,T9,payment,1.00,0,2026-11-01T10:00:00Z\n\
            P1,R1,refund,30.00,0,2026-11-01T10:00:00Z\n\
            P1,R2,refund,5.00,0,2026-11-01T10:00:00Z\n\
            P1,T1,payment,100.00,0.60,2026-11-01T10:00:00Z\n";
        let rows = parse_file(file.as_bytes(), 1000).unwrap();
        let payments = vec![
            LedgerPayment {
                payment_no: "P1".into(),
                amount: "100.00".parse().unwrap(),
                status: PaymentStatus::Success,
                paid_at: Some(t()),
            },
            LedgerPayment {
                payment_no: "P2".into(),
                amount: "50.00".parse().unwrap(),
                status: PaymentStatus::Failed,
                paid_at: None,
            },
            LedgerPayment {
                payment_no: "P3".into(),
                amount: "10.01".parse().unwrap(),
                status: PaymentStatus::Success,
                paid_at: Some(t()),
            },
            LedgerPayment {
                payment_no: "P4".into(),
                amount: "7.00".parse().unwrap(),
                status: PaymentStatus::Refunded,
                paid_at: Some(t()),
            },
            LedgerPayment {
                payment_no: "P5".into(),
                amount: "7.00".parse().unwrap(),
                status: PaymentStatus::Pending,
                paid_at: None,
            },
        ];
        let refunds = vec![
            LedgerRefund {
                refund_no: "R1".into(),
                payment_no: "P1".into(),
                amount: "30.00".parse().unwrap(),
                status: RefundStatus::Success,
                updated_at: t(),
            },
            LedgerRefund {
                refund_no: "R2".into(),
                payment_no: "P1".into(),
                amount: "5.00".parse().unwrap(),
                status: RefundStatus::Processing,
                updated_at: t(),
            },
            LedgerRefund {
                refund_no: "R3".into(),
                payment_no: "P4".into(),
                amount: "7.00".parse().unwrap(),
                status: RefundStatus::Success,
                updated_at: t(),
            },
        ];
        let r = reconcile(&rows, &payments, &refunds);
        assert_eq!(r.count(Category::Matched), 2, "{r:#?}");
        assert_eq!(r.count(Category::StatusMismatch), 2); // P2 failed, R2 processing
        assert_eq!(r.count(Category::AmountMismatch), 1); // P3
        assert_eq!(r.count(Category::MissingInLedger), 1); // P9
        assert_eq!(r.count(Category::DuplicateInFile), 1); // second P1
        assert_eq!(r.count(Category::MissingInFile), 2); // P4 and R3; P5 is unsettled
        assert_eq!(r.fees, "1.50".parse::<Decimal>().unwrap());
        assert_eq!(r.settled_payments, "261.00".parse::<Decimal>().unwrap());
        assert!(!r.all_match());
    }

    #[test]
    fn malformed_lines_are_named() {
        let bad = [
            ("payment_no,type,amount,fee,settled_at\n", "missing: gateway_trade_no"),
            ("payment_no,gateway_trade_no,type,amount,fee,settled_at\nP1,T1,payment,1e400,0,2026-11-01T10:00:00Z\n", "line 2"),
            ("payment_no,gateway_trade_no,type,amount,fee,settled_at\nP1,T1,payment,1.00,0,2026-11-01T10:00:00Z\nP2,T2,charge,1.00,0,2026-11-01T10:00:00Z\n", "line 3"),
            ("payment_no,gateway_trade_no,type,amount,fee,settled_at\nP1,T1,payment,1.00,0,yesterday\n", "line 2"),
            ("payment_no,gateway_trade_no,type,amount,fee,settled_at\nP1,T1,payment,-1.00,0,2026-11-01T10:00:00Z\n", "line 2"),
            ("payment_no,gateway_trade_no,type,amount,fee,settled_at\nP1,T1,payment,1.00,-0.1,2026-11-01T10:00:00Z\n", "line 2"),
            ("payment_no,gateway_trade_no,type,amount,fee,settled_at\nP1,,refund,1.00,0,2026-11-01T10:00:00Z\n", "line 2"),
        ];
        for (text, expected) in bad {
            let e = parse_file(text.as_bytes(), 1000)
                .expect_err(text)
                .to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
