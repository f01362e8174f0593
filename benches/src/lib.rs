//! `ledger bench` (the `ledger-bench` binary, which `ledger bench` runs): the load harness (BENCHMARKS.md). On loopback against the real PostgreSQL
//! and NATS, in a fresh database and NATS stream that it removes afterwards, it starts the
//! service in this process and measures, in one run: the raw insert limit, signed write
//! flows, cached and uncached reads next to a bare axum handler, projection lag under write
//! load, a full replay, and the same flow on cqrs-es + postgres-es. It prints a table and,
//! last, one line of JSON.
//!
//! It measures and reports; it asserts nothing about time. The load generator runs on its own
//! runtime so that its CPU can be reported apart from the service's (see `cpu`).

pub mod cpu;
pub mod env;
pub mod load;
#[cfg(feature = "peer")]
pub mod peer;
pub mod pgbench;
pub mod raw;
pub mod reads;
pub mod replay;
pub mod writes;

use std::sync::atomic::{AtomicI64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use cpu::CpuUsage;
use env::{Databases, Service, ADMIN_KEY_ID};
use ledger::config::RawConfig;
use ledger_projections::ProjectionContext;
use load::{Conn, PhaseResult, Signer};

/// Write concurrencies measured (virtual clients).
pub const WRITE_CLIENTS: [usize; 3] = [1, 16, 64];
/// The phases `--only` accepts.
const PHASES: [&str; 6] = ["raw", "pgbench", "writes", "reads", "peer", "replay"];
/// Concurrency of the raw, read and peer phases.
pub const CLIENTS: usize = 64;
/// Payments read in the read phases (the first read of each is the cache-miss sample).
const READ_PAYMENTS_MAX: usize = 20_000;
/// List pages read in the list phase.
const LIST_PAGES: u32 = 10;
/// Events the replay breakdown covers (it runs the rebuild twice more).
const BREAKDOWN_EVENTS_MAX: i64 = 200_000;
/// Longest wait for the projections and refund process to catch up between phases.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// A short run (under 3 minutes): 100,000 replay events and 4 s phases.
    #[arg(long)]
    pub quick: bool,
    /// Events to replay (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    pub events: Option<u64>,
    /// Measured seconds per phase, after a warm-up (default 15; 4 with --quick).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Threads of the load generator's runtime (default: the number of CPUs).
    #[arg(long)]
    pub load_threads: Option<usize>,
    /// Events of history the service's database starts with, appended and projected and
    /// then analysed before the write phases, so that the planner sees a database that has
    /// been in use (default 200,000; 50,000 with --quick).
    #[arg(long)]
    pub seed_events: Option<u64>,
    /// Also time the replay stage by stage (read, decode, each table, commit).
    #[arg(long)]
    pub breakdown: bool,
    /// Run only these phases (comma-separated: raw, pgbench, writes, reads, peer, replay; reads
    /// implies writes, which create the payments it reads). Default: all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

struct Plan {
    events: u64,
    warmup: Duration,
    measure: Duration,
    load_threads: usize,
    breakdown: bool,
    quick: bool,
    phases: Vec<String>,
    seed_events: u64,
}

impl Plan {
    fn from(args: &BenchArgs) -> Plan {
        let quick = args.quick;
        Plan {
            events: args
                .events
                .unwrap_or(if quick { 100_000 } else { 1_000_000 })
                .max(1),
            warmup: Duration::from_secs(if quick { 1 } else { 3 }),
            measure: Duration::from_secs(args.seconds.unwrap_or(if quick { 4 } else { 15 }).max(1)),
            load_threads: args.load_threads.unwrap_or_else(cpu::cpus).max(1),
            breakdown: args.breakdown,
            quick,
            seed_events: args
                .seed_events
                .unwrap_or(if quick { 50_000 } else { 200_000 }),
            phases: args
                .only
                .iter()
                .map(|p| p.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.is_empty()
            || self.phases.iter().any(|p| p == phase)
            || (phase == "writes" && self.runs("reads"))
    }
}

/// One line of the table.
struct Row {
    phase: String,
    clients: String,
    rate: f64,
    unit: &'static str,
    latency_ms: Option<[f64; 3]>,
    errors: u64,
    cpu: Option<CpuUsage>,
    note: String,
}

impl Row {
    fn from_phase(phase: &str, unit: &'static str, r: &PhaseResult, note: String) -> Row {
        Row {
            phase: phase.to_owned(),
            clients: r.clients.to_string(),
            rate: r.rate(),
            unit,
            latency_ms: Some([r.ms(0.5), r.ms(0.99), r.ms(0.999)]),
            errors: r.errors,
            cpu: Some(r.cpu),
            note,
        }
    }
}

/// The last line of the output (keys as BENCHMARKS.md names them).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub raw_insert_per_s: f64,
    /// pgbench, one INSERT per transaction at 64 clients (None when pgbench is missing).
    pub pgbench_insert_per_s: Option<f64>,
    /// One client: the mean time of a create, notify or refund, durable and projected.
    pub serial_cmd_avg_ms: f64,
    /// One client: the mean time of a cached detail or list read (the slower of the two).
    pub serial_read_avg_ms: f64,
    pub write_cmds_per_s: f64,
    pub write_p99_ms: f64,
    pub read_rps: f64,
    pub read_p99_ms: f64,
    pub bare_rps: f64,
    pub bare_p99_ms: f64,
    pub miss_p99_ms: f64,
    pub lag_p99_ms: f64,
    pub replay_events_per_s: f64,
    pub peer_cmds_per_s: f64,
    pub rss_mb: f64,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    summary: Summary,
}

impl Report {
    fn add(&mut self, row: Row, first_error: Option<&String>) {
        if let Some(e) = first_error {
            self.notes.push(format!("{}: first error: {e}", row.phase));
        }
        eprintln!(
            "  {:<34} {:>10.0} {}{}",
            row.phase,
            row.rate,
            row.unit,
            row.latency_ms
                .map(|l| format!("  p50 {:.2} ms  p99 {:.2} ms", l[0], l[1]))
                .unwrap_or_default()
        );
        self.rows.push(row);
    }
}

/// The `ledger-bench` binary's run: the runtime, logging, the harness, and the process's exit
/// with its code. Here rather than in main.rs so that the async code under [`run`] is
/// compiled once, in this crate (see `ledger::cli::main`).
pub fn main(config: &RawConfig, args: BenchArgs) -> ! {
    ledger::cli::run_to_exit(run(config, args))
}

/// Runs the harness; returns the exit code (0 unless a phase failed outright).
pub async fn run(config: &RawConfig, args: BenchArgs) -> anyhow::Result<i32> {
    let plan = Plan::from(&args);
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.load_threads)
        .thread_name(cpu::LOAD_THREAD_NAME)
        .enable_all()
        .build()?;
    let mut dbs = Databases::new(&config.database_url)?;
    let started = Instant::now();
    let mut report = Report::default();
    report
        .notes
        .push(format!("load average before: {}", cpu::loadavg()));
    let outcome = run_phases(config, &plan, load.handle(), &mut dbs, &mut report).await;
    dbs.drop_all().await;
    load.shutdown_background();
    outcome?;
    report
        .notes
        .push(format!("load average after: {}", cpu::loadavg()));
    print_report(config, &plan, &dbs, &report, started.elapsed()).await;
    Ok(0)
}

async fn run_phases(
    config: &RawConfig,
    plan: &Plan,
    load: &tokio::runtime::Handle,
    dbs: &mut Databases,
    report: &mut Report,
) -> anyhow::Result<()> {
    if let Some(unknown) = plan.phases.iter().find(|p| !PHASES.contains(&p.as_str())) {
        anyhow::bail!(
            "--only: unknown phase {unknown:?} (use {})",
            PHASES.join(", ")
        );
    }
    let url = dbs.create("main").await?;
    eprintln!("ledger bench: database {url}, NATS {}", config.nats_url);
    if plan.runs("raw") {
        raw_phase(plan, load, &url, report).await?;
    }
    if plan.runs("pgbench") {
        pgbench_phase(plan, &url, report).await;
    }
    if plan.runs("writes") {
        seed(plan, &url, report).await?;
        let service = Service::start(config, &url, &dbs.run_id).await?;
        eprintln!("ledger bench: service on http://{}", service.addr);
        let served = service_phases(plan, load, &service, report).await;
        let (rss, _) = cpu::rss_mb();
        report.summary.rss_mb = report.summary.rss_mb.max(rss);
        service.stop().await;
        served?;
    }
    if plan.runs("peer") {
        peer_phase(plan, load, &url, report).await?;
    }
    if plan.runs("replay") {
        replay_phase(plan, dbs, report).await?;
    }
    Ok(())
}

/// Gives the service's database a history (whole payment flows through the real writer), so
/// that the write phases do not measure an empty database whose planner statistics say
/// "no rows" (which makes PostgreSQL scan tables that have since grown).
async fn seed(plan: &Plan, url: &str, report: &mut Report) -> anyhow::Result<()> {
    if plan.seed_events == 0 {
        return Ok(());
    }
    let pool = ledger_store::connect(url, 8, false).await?;
    ledger_store::migrate(&pool).await?;
    eprintln!(
        "ledger bench: seeding {} events of history…",
        plan.seed_events
    );
    let (events, took) = replay::generate(&pool, plan.seed_events).await?;
    pool.close().await;
    report.notes.push(format!(
        "the service's database was seeded with {events} events ({} payments) in {:.1} s, projected, then ANALYZEd",
        events / replay::EVENTS_PER_FLOW as i64,
        took.as_secs_f64()
    ));
    Ok(())
}

/// Phases that need the running service: writes, lag, reads, misses and the bare handler.
async fn service_phases(
    plan: &Plan,
    load: &tokio::runtime::Handle,
    service: &Service,
    report: &mut Report,
) -> anyhow::Result<()> {
    let backlog = service.settle(SETTLE_LIMIT).await?;
    if backlog > 0
        || service.state.position() < ledger_store::head_position(&service.state.pool).await?
    {
        report
            .notes
            .push("the seeded history was not fully projected before the write phases".into());
    }
    sqlx::query("ANALYZE").execute(&service.state.pool).await?;

    let created: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    for clients in WRITE_CLIENTS {
        let head = service.state.commands.writer().head();
        let applied = service.state.applied.clone();
        let start = Instant::now();
        let window = (start + plan.warmup, start + plan.warmup + plan.measure);
        let stop_lag = CancellationToken::new();
        let lag = tokio::spawn(writes::monitor_lag(head, applied, window, stop_lag.clone()));
        let before = ServiceStats::read(service);
        let workers = (0..clients)
            .map(|i| {
                writes::WriteWorker::new(
                    Conn::new(service.addr),
                    &service.credentials,
                    i,
                    created.clone(),
                )
            })
            .collect();
        let r = load::run(load, workers, plan.warmup, plan.measure).await;
        stop_lag.cancel();
        let lag = lag.await?;
        let during = ServiceStats::read(service).since(&before);
        let settle_started = Instant::now();
        let backlog = service.settle(SETTLE_LIMIT).await?;
        let note = format!(
            "{:.1} appends/commit, commit {:.1} ms, projector batch {:.1} ms ({:.0} events); settled in {:.1} s{}",
            during.appends_per_commit(),
            during.commit_ms(),
            during.projection_ms(),
            during.events_per_projection(),
            settle_started.elapsed().as_secs_f64(),
            if backlog > 0 {
                format!(", {backlog} refunds still processing")
            } else {
                String::new()
            }
        );
        let phase = format!("writes: create→notify→refund @{clients}");
        if clients == CLIENTS {
            report.summary.write_cmds_per_s = r.rate();
            report.summary.write_p99_ms = r.ms(0.99);
        }
        if clients == 1 {
            report.summary.serial_cmd_avg_ms = r.mean_ms();
        }
        report.add(
            Row::from_phase(&phase, "cmd/s", &r, note),
            r.first_error.as_ref(),
        );
        let lag_ms = |q: f64| {
            if lag.is_empty() {
                0.0
            } else {
                lag.value_at_quantile(q) as f64 / 1000.0
            }
        };
        if clients == CLIENTS {
            report.summary.lag_p99_ms = lag_ms(0.99);
        }
        report.add(
            Row {
                phase: format!("lag: commit→projected @{clients}"),
                clients: clients.to_string(),
                rate: lag.len() as f64 / plan.measure.as_secs_f64(),
                unit: "commits/s",
                latency_ms: Some([lag_ms(0.5), lag_ms(0.99), lag_ms(0.999)]),
                errors: 0,
                cpu: None,
                note: "inside the service: writer head → projector applied".into(),
            },
            None,
        );
    }
    let (rss, _) = cpu::rss_mb();
    report.summary.rss_mb = report.summary.rss_mb.max(rss);

    let ids: Vec<Uuid> = {
        let created = created.lock().unwrap_or_else(|p| p.into_inner());
        created.iter().take(READ_PAYMENTS_MAX).copied().collect()
    };
    if !plan.runs("reads") {
        return Ok(());
    }
    if ids.is_empty() {
        anyhow::bail!("the write phases created no payment; nothing to read");
    }
    read_phases(plan, load, service, &ids, report).await
}

async fn raw_phase(
    plan: &Plan,
    load: &tokio::runtime::Handle,
    url: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pool = load_pool(load, url, CLIENTS as u32).await?;
    ledger_store::migrate(&pool).await?;
    raw::prepare(&pool).await?;
    let payload = raw::sample_payload();
    let position = Arc::new(AtomicI64::new(0));
    let workers = (0..CLIENTS)
        .map(|_| raw::RawWorker::new(pool.clone(), position.clone(), &payload))
        .collect();
    let r = load::run(load, workers, plan.warmup, plan.measure).await;
    raw::cleanup(&pool).await;
    pool.close().await;
    report.summary.raw_insert_per_s = r.rate();
    let note = "1 row per transaction, copy of the events table".to_owned();
    report.add(
        Row::from_phase("raw: INSERT 1 event row/tx", "rows/s", &r, note),
        r.first_error.as_ref(),
    );
    Ok(())
}

/// PostgreSQL's own limit as its own tool measures it: pgbench, one INSERT per transaction
/// at 64 clients, in the bench's database, for the phase's time.
async fn pgbench_phase(plan: &Plan, url: &str, report: &mut Report) {
    match pgbench::run(url, CLIENTS, plan.measure).await {
        Ok(Some(tps)) => {
            report.summary.pgbench_insert_per_s = Some(tps);
            report.add(
                Row {
                    phase: "pgbench: INSERT 1 row/tx".into(),
                    clients: CLIENTS.to_string(),
                    rate: tps,
                    unit: "rows/s",
                    latency_ms: None,
                    errors: 0,
                    cpu: None,
                    note: "pgbench -n -c 64 -j 2, one 600-byte row per transaction".into(),
                },
                None,
            );
        }
        Ok(None) => report
            .notes
            .push("pgbench: not installed (Debian: postgresql-client), row skipped".into()),
        Err(e) => report.notes.push(format!("pgbench: {e}")),
    }
}

async fn read_phases(
    plan: &Plan,
    load: &tokio::runtime::Handle,
    service: &Service,
    ids: &[Uuid],
    report: &mut Report,
) -> anyhow::Result<()> {
    let signer = Signer::new(ADMIN_KEY_ID, &service.credentials.admin_secret);
    let details: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| format!("/api/v1/payments/{id}"))
            .collect(),
    );

    // The cache-miss path: the first read of each payment after the cache was emptied. It
    // also warms the cache for the next phase.
    service.state.cache.clear();
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..CLIENTS)
        .map(|_| {
            reads::OnceWorker::new(
                Conn::new(service.addr),
                signer.clone(),
                details.clone(),
                next.clone(),
            )
        })
        .collect();
    let r = load::run(load, workers, Duration::ZERO, plan.measure * 4).await;
    report.summary.miss_p99_ms = r.ms(0.99);
    let note = format!("{} first reads (detail, cache emptied)", r.ops);
    report.add(
        Row::from_phase("reads: detail, cache miss", "req/s", &r, note),
        r.first_error.as_ref(),
    );

    let workers = (0..CLIENTS)
        .map(|i| {
            reads::ReadWorker::new(
                Conn::new(service.addr),
                signer.clone(),
                details.clone(),
                i as u64 + 1,
            )
        })
        .collect();
    let detail = load::run(load, workers, plan.warmup, plan.measure).await;
    let note = format!("{} payments, all cached", details.len());
    report.add(
        Row::from_phase("reads: detail, cached", "req/s", &detail, note),
        detail.first_error.as_ref(),
    );

    let lists: Arc<Vec<String>> = Arc::new(
        (1..=LIST_PAGES)
            .map(|p| format!("/api/v1/payments?page={p}&size=10"))
            .collect(),
    );
    let workers = (0..CLIENTS)
        .map(|i| {
            reads::ReadWorker::new(
                Conn::new(service.addr),
                signer.clone(),
                lists.clone(),
                i as u64 + 1,
            )
        })
        .collect();
    let list = load::run(load, workers, plan.warmup, plan.measure).await;
    let note = format!("{LIST_PAGES} pages of 10, cached after first read");
    report.add(
        Row::from_phase("reads: list, cached", "req/s", &list, note),
        list.first_error.as_ref(),
    );
    // The conservative pair: the slower of the two read kinds, and the worse tail.
    report.summary.read_rps = detail.rate().min(list.rate());
    report.summary.read_p99_ms = detail.ms(0.99).max(list.ms(0.99));

    let sample = ledger::api::payments::load_detail(&service.state, ids[0])
        .await
        .map_err(|e| anyhow::anyhow!("cannot load a detail for the bare handler: {e:?}"))?
        .ok_or_else(|| anyhow::anyhow!("payment {} has no detail", ids[0]))?;
    let stop_bare = CancellationToken::new();
    let bare_addr = reads::serve_bare(sample, stop_bare.clone()).await?;
    let bare_targets: Arc<Vec<String>> =
        Arc::new(ids.iter().map(|id| format!("/bare/{id}")).collect());
    let workers = (0..CLIENTS)
        .map(|i| {
            reads::ReadWorker::new(
                Conn::new(bare_addr),
                signer.clone(),
                bare_targets.clone(),
                i as u64 + 1,
            )
        })
        .collect();
    let bare = load::run(load, workers, plan.warmup, plan.measure).await;
    stop_bare.cancel();
    report.summary.bare_rps = bare.rate();
    report.summary.bare_p99_ms = bare.ms(0.99);
    let note = "same payload and runtime; no auth, cache or middleware".to_owned();
    report.add(
        Row::from_phase("bare axum JSON handler (ceiling)", "req/s", &bare, note),
        bare.first_error.as_ref(),
    );

    let workers = vec![reads::ReadWorker::new(
        Conn::new(service.addr),
        signer.clone(),
        details.clone(),
        7,
    )];
    let single = load::run(load, workers, plan.warmup, plan.measure).await;
    let note = "one client: the unloaded latency".to_owned();
    report.add(
        Row::from_phase("reads: detail, cached", "req/s", &single, note),
        single.first_error.as_ref(),
    );
    let workers = vec![reads::ReadWorker::new(
        Conn::new(service.addr),
        signer.clone(),
        lists.clone(),
        8,
    )];
    let single_list = load::run(load, workers, plan.warmup, plan.measure).await;
    let note = "one client: the unloaded latency".to_owned();
    report.add(
        Row::from_phase("reads: list, cached", "req/s", &single_list, note),
        single_list.first_error.as_ref(),
    );
    report.summary.serial_read_avg_ms = single.mean_ms().max(single_list.mean_ms());
    Ok(())
}

#[cfg(feature = "peer")]
async fn peer_phase(
    plan: &Plan,
    load: &tokio::runtime::Handle,
    url: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pool = load_pool(load, url, CLIENTS as u32).await?;
    let cqrs = peer::setup(&pool).await?;
    let workers = (0..CLIENTS)
        .map(|i| peer::PeerWorker::new(cqrs.clone(), i))
        .collect();
    let r = load::run(load, workers, plan.warmup, plan.measure).await;
    pool.close().await;
    report.summary.peer_cmds_per_s = r.rate();
    let note = "cqrs-es 0.5 + postgres-es 0.5, in-process (no HTTP, no signing)".to_owned();
    report.add(
        Row::from_phase("peer: create→pay→refund", "cmd/s", &r, note),
        r.first_error.as_ref(),
    );
    Ok(())
}

#[cfg(not(feature = "peer"))]
async fn peer_phase(
    _: &Plan,
    _: &tokio::runtime::Handle,
    _: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    report
        .notes
        .push("peer: not built (cargo feature `peer` is off)".into());
    Ok(())
}

async fn replay_phase(plan: &Plan, dbs: &mut Databases, report: &mut Report) -> anyhow::Result<()> {
    let url = dbs.create("replay").await?;
    let pool = ledger_store::connect(&url, 8, false).await?;
    ledger_store::migrate(&pool).await?;
    eprintln!(
        "ledger bench: generating {} events through the writer…",
        plan.events
    );
    let cpu_from = cpu::sample();
    let (events, took) = replay::generate(&pool, plan.events).await?;
    let generated = cpu::usage(&cpu_from, &cpu::sample());
    report.add(
        Row {
            phase: "append: generate replay log".into(),
            clients: "2048".into(),
            rate: events as f64 / took.as_secs_f64().max(1e-9),
            unit: "events/s",
            latency_ms: None,
            errors: 0,
            cpu: Some(generated),
            note: format!("{events} events via store::Writer (group commit, hash chain)"),
        },
        None,
    );
    let master_key = ledger_store::sealing::MasterKey::generate();
    let ctx = ProjectionContext { master_key };
    eprintln!("ledger bench: replaying {events} events…");
    let cpu_from = cpu::sample();
    let rebuilt = ledger_projections::replay::replay(&pool, &ctx, true, false).await?;
    let used = cpu::usage(&cpu_from, &cpu::sample());
    report.summary.replay_events_per_s = rebuilt.events_per_second;
    report.add(
        Row {
            phase: "replay: rebuild all read tables".into(),
            clients: "1".into(),
            rate: rebuilt.events_per_second,
            unit: "events/s",
            latency_ms: None,
            errors: 0,
            cpu: Some(used),
            note: format!("{} events in {:.1} s", rebuilt.events, rebuilt.seconds),
        },
        None,
    );
    if plan.breakdown {
        let upto = events.min(BREAKDOWN_EVENTS_MAX);
        for indexes_after in [false, true] {
            let b = replay::breakdown(&pool, &ctx, upto, indexes_after).await?;
            report.notes.push(format!(
                "replay breakdown ({}) over {} events, seconds: read {:.2}, decode {:.2}, fold {:.2}, payments {:.2}, \
                 callbacks {:.2}, refunds {:.2}, ledger_entries {:.2}, commit {:.2}, index build {:.2}; \
                 total {:.2} = {:.0} events/s",
                if indexes_after { "primary keys only, other indexes built after" } else { "as replay: all indexes" },
                b.events,
                b.read_s,
                b.decode_s,
                b.fold_s,
                b.payments_s,
                b.callbacks_s,
                b.refunds_s,
                b.ledger_entries_s,
                b.commit_s,
                b.index_s,
                b.total_s(),
                b.events_per_s()
            ));
        }
    }
    pool.close().await;
    Ok(())
}

/// A pool whose connections live on the load runtime (so their CPU counts as the client's).
async fn load_pool(
    load: &tokio::runtime::Handle,
    url: &str,
    connections: u32,
) -> anyhow::Result<sqlx::PgPool> {
    let url = url.to_owned();
    load.spawn(async move {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(anyhow::Error::from)
    })
    .await?
}

/// Counters the service exports (Prometheus), read in-process to explain the write rows.
#[derive(Debug, Default, Clone, Copy)]
struct ServiceStats {
    appends: f64,
    commits: f64,
    commit_seconds: f64,
    projection_batches: f64,
    projection_seconds: f64,
    projected_events: f64,
}

impl ServiceStats {
    fn read(service: &Service) -> ServiceStats {
        let text = service.state.metrics.render();
        let value = |name: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix(name))
                .filter_map(|rest| {
                    rest.strip_prefix(' ')
                        .or_else(|| rest.split_once("} ").map(|(_, v)| v))
                })
                .filter_map(|v| v.trim().parse::<f64>().ok())
                .sum::<f64>()
        };
        ServiceStats {
            appends: value("ledger_append_batch_size_sum"),
            commits: value("ledger_append_batch_size_count"),
            commit_seconds: value("ledger_append_batch_seconds_sum"),
            projection_batches: value("ledger_projection_batch_seconds_count"),
            projection_seconds: value("ledger_projection_batch_seconds_sum"),
            projected_events: value("ledger_projected_events_total"),
        }
    }

    fn since(&self, before: &ServiceStats) -> ServiceStats {
        ServiceStats {
            appends: self.appends - before.appends,
            commits: self.commits - before.commits,
            commit_seconds: self.commit_seconds - before.commit_seconds,
            projection_batches: self.projection_batches - before.projection_batches,
            projection_seconds: self.projection_seconds - before.projection_seconds,
            projected_events: self.projected_events - before.projected_events,
        }
    }

    fn appends_per_commit(&self) -> f64 {
        self.appends / self.commits.max(1.0)
    }

    fn commit_ms(&self) -> f64 {
        self.commit_seconds * 1000.0 / self.commits.max(1.0)
    }

    fn projection_ms(&self) -> f64 {
        self.projection_seconds * 1000.0 / self.projection_batches.max(1.0)
    }

    fn events_per_projection(&self) -> f64 {
        self.projected_events / self.projection_batches.max(1.0)
    }
}

async fn print_report(
    config: &RawConfig,
    plan: &Plan,
    dbs: &Databases,
    report: &Report,
    took: Duration,
) {
    let (_, peak) = cpu::rss_mb();
    println!();
    println!(
        "ledger bench{} — {} CPUs, PostgreSQL {}, NATS {}, load generator on {} thread(s), {} s phases after {} s warm-up",
        if plan.quick { " --quick" } else { "" },
        cpu::cpus(),
        dbs.server_version().await,
        if config.nats_url.trim() == "none" { "none (in-process bus)".to_owned() } else { config.nats_url.clone() },
        plan.load_threads,
        plan.measure.as_secs(),
        plan.warmup.as_secs(),
    );
    println!();
    println!(
        "{:<36} {:>7} {:>12} {:<9} {:>8} {:>8} {:>8} {:>6}  {:<36} note",
        "phase",
        "clients",
        "rate",
        "unit",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "errors",
        "cpu cores load/ledger/other/irq"
    );
    for r in &report.rows {
        let lat = |i: usize| {
            r.latency_ms
                .map(|l| format!("{:.2}", l[i]))
                .unwrap_or_else(|| "-".into())
        };
        let cpu = r
            .cpu
            .map(|c| {
                format!(
                    "{:.2}/{:.2}/{:.2}/{:.2} ({:.0}% load)",
                    c.load,
                    c.ledger,
                    c.other,
                    c.kernel,
                    c.load_share() * 100.0
                )
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<36} {:>7} {:>12.0} {:<9} {:>8} {:>8} {:>8} {:>6}  {:<36} {}",
            r.phase,
            r.clients,
            r.rate,
            r.unit,
            lat(0),
            lat(1),
            lat(2),
            r.errors,
            cpu,
            r.note
        );
    }
    println!();
    let s = &report.summary;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    println!("targets:");
    let verdict = |measured: bool, ok: bool| match (measured, ok) {
        (false, _) => "not measured",
        (true, true) => "met",
        (true, false) => "NOT met",
    };
    let (writes, raw_ran) = (s.write_cmds_per_s > 0.0, s.raw_insert_per_s > 0.0);
    let reads = s.read_rps > 0.0;
    println!(
        "  serial_cmd_avg_ms = {:.2} (one client; target ≤ 1: {})",
        s.serial_cmd_avg_ms,
        verdict(writes, s.serial_cmd_avg_ms <= 1.0)
    );
    println!(
        "  serial_read_avg_ms = {:.3} (one client, cached; target ≤ 0.2: {})",
        s.serial_read_avg_ms,
        verdict(reads, s.serial_read_avg_ms <= 0.2)
    );
    let write_raw = ratio(s.write_cmds_per_s, s.raw_insert_per_s);
    println!(
        "  write_cmds_per_s / raw_insert_per_s = {write_raw:.2} (target ≥ 1.0: {})",
        verdict(writes && raw_ran, write_raw >= 1.0)
    );
    let pgbench = s.pgbench_insert_per_s.unwrap_or(0.0);
    let write_pgbench = ratio(s.write_cmds_per_s, pgbench);
    println!(
        "  write_cmds_per_s / pgbench_insert_per_s = {write_pgbench:.2} (target ≥ 0.5: {})",
        verdict(writes && pgbench > 0.0, write_pgbench >= 0.5)
    );
    let peer = ratio(s.write_cmds_per_s, s.peer_cmds_per_s);
    println!(
        "  write_cmds_per_s / peer_cmds_per_s = {peer:.2} (target ≥ 3: {})",
        verdict(writes && s.peer_cmds_per_s > 0.0, peer >= 3.0)
    );
    let read_bare = ratio(s.read_rps, s.bare_rps);
    println!(
        "  read_rps / bare_rps = {read_bare:.2} (target ≥ 0.7: {})",
        verdict(reads, read_bare >= 0.7)
    );
    let p99_bare = ratio(s.read_p99_ms, s.bare_p99_ms);
    println!(
        "  read_p99_ms / bare p99 = {:.2} / {:.2} = {p99_bare:.2} (target ≤ 1.5: {})",
        s.read_p99_ms,
        s.bare_p99_ms,
        verdict(reads && s.bare_p99_ms > 0.0, p99_bare <= 1.5)
    );
    println!(
        "  lag_p99_ms = {:.2} (64 clients; target ≤ 5: {})",
        s.lag_p99_ms,
        verdict(writes, s.lag_p99_ms <= 5.0)
    );
    println!(
        "  replay_events_per_s = {:.0} (target ≥ 100000: {})",
        s.replay_events_per_s,
        verdict(
            s.replay_events_per_s > 0.0,
            s.replay_events_per_s >= 100_000.0
        )
    );
    println!("  process RSS: {:.0} MiB while serving, {:.0} MiB peak (service and load generator share the process)", s.rss_mb, peak);
    println!("  total time: {:.0} s", took.as_secs_f64());
    for n in &report.notes {
        println!("note: {n}");
    }
    println!();
    println!(
        "{}",
        serde_json::to_string(s).expect("the summary serializes")
    );
}
