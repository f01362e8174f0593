//! The command line (SPEC §10): the verbs, their help and examples, and the guide `ledger`
//! prints with no arguments.
//!
//! Every setting is a global argument (and an environment variable), so `ledger serve --help`
//! shows each one with its rule and default, and `ledger serve --bind …` works as well as
//! `ledger --bind … serve`. This module only parses and dispatches: the work is in the
//! modules each verb names.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::{self, ServeRole};
use crate::config::RawConfig;

#[derive(Parser, Debug)]
#[command(
    name = "ledger",
    version,
    about = "Event-sourced payment ledger",
    after_help = "Run `ledger` with no arguments for a guide to the verbs."
)]
pub struct Cli {
    #[command(flatten, next_help_heading = "Settings")]
    pub config: RawConfig,
    /// None: print the guide to the verbs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `ledger` with no arguments prints: the verbs by what they are for.
pub const GUIDE: &str = "\
ledger: an event-sourced payment ledger. `ledger VERB --help` shows a verb's options and an
example; every setting is an environment variable (`ledger serve --help` lists them).

run
  serve        run the service: HTTP API, console, relay to NATS, projectors
  migrate      create the database if missing and apply the migrations
  doctor       check PostgreSQL, migrations, NATS, keys, the listen address and the clock
operate
  api          send a signed request: ledger api GET /api/v1/payments
  shred        destroy a user's data key (crypto-shredding of payer data)
  completions  print a shell completion script (bash, zsh, fish)
audit
  verify       check the hash chain from genesis, or against a saved signed digest
  replay       rebuild the read tables from the log and compare them with the live ones
finance
  reconcile    match a gateway settlement file against the ledger
try
  demo         drive realistic traffic against a running service and check it all agrees
  simulate     run an Alipay or WeChat Pay simulator the ledger can be pointed at
  bench        the load harness (BENCHMARKS.md)

First time here: start PostgreSQL and NATS, then
  ledger doctor          # is everything where the defaults expect it?
  ledger serve           # in one terminal
  ledger demo            # in another: ends with `everything agrees`
";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service (API, relay, projectors).
    #[command(
        after_help = "Example:\n  ledger serve\n  LEDGER_BIND=0.0.0.0:8080 NATS_URL=none ledger serve --role all\n\nIf it does not start, `ledger doctor` says what is missing."
    )]
    Serve {
        /// What this process runs: `api` (HTTP API), `projector` (projectors, relay, refund
        /// process) or `all`.
        #[arg(long, value_enum, default_value = "all")]
        role: ServeRole,
    },
    /// Create the database if missing and apply migrations.
    #[command(
        after_help = "Example:\n  DATABASE_URL=postgres://postgres@127.0.0.1:5432/ledger ledger migrate"
    )]
    Migrate,
    /// Check the setup `serve` needs: PostgreSQL, migrations, NATS and its stream, keys and
    /// secrets, TLS files, the listen address, the clock. One line per check, with the fix.
    /// Exit status 0 only when every check passes.
    #[command(
        after_help = "Example:\n  ledger doctor\n  NATS_URL=none LEDGER_BIND=127.0.0.1:9090 ledger doctor"
    )]
    Doctor,
    /// Check the hash chain from genesis, optionally against a saved signed digest.
    #[command(
        after_help = "Example:\n  ledger verify\n  ledger api GET /api/v1/audit/digest > digest.json   # keep it outside the system\n  ledger verify --digest digest.json"
    )]
    Verify {
        /// A digest saved from `GET /api/v1/audit/digest` (the `data` object or the envelope).
        #[arg(long)]
        digest: Option<PathBuf>,
        /// The public key you trust (hex); defaults to the one in the digest.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Rebuild every read table from the log, compare with the live ones, and swap them in.
    #[command(
        after_help = "Example:\n  ledger replay --check   # rebuild and report drift, live tables untouched\n  ledger replay           # ... and swap the rebuilt tables in"
    )]
    Replay {
        /// Only rebuild and report drift; leave the live tables alone.
        #[arg(long)]
        check: bool,
    },
    /// Destroy a user's data key (crypto-shredding of their payer data).
    #[command(after_help = "Example:\n  ledger shred --user U-1")]
    Shred {
        /// The user_id whose payer data becomes unreadable (`[erased]`).
        #[arg(long)]
        user: String,
    },
    /// Send a signed request and print the JSON answer: `ledger api GET /api/v1/payments` or
    /// `ledger api POST PATH BODY`. Signs with LEDGER_KEY_ID/LEDGER_SECRET, or the development
    /// dev-admin key `serve` generated. Exit status 1 on a non-2xx answer.
    #[command(
        after_help = "Example:\n  ledger api GET '/api/v1/payments?status=success&size=5'\n  ID=$(ledger api --field data.payment_id POST /api/v1/payments/create \\\n       '{\"amount\":\"9.90\",\"currency\":\"CNY\",\"payment_method\":\"alipay\",\"order_id\":\"ORD-7\",\"user_id\":\"U-1\"}')\n  ledger api --field data.status GET /api/v1/payments/$ID/status"
    )]
    Api {
        /// GET or POST.
        method: String,
        /// Path and query, exactly as sent (quote it when it has `&`).
        path: String,
        /// The JSON body of a POST.
        body: Option<String>,
        /// Base URL of the service (default http://LEDGER_BIND).
        #[arg(long, env = "LEDGER_URL")]
        url: Option<String>,
        /// Sent as the Idempotency-Key header: a retry with the same key is answered once.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Accept-Language of the answer's messages (`en` or `zh`).
        #[arg(long, default_value = "en")]
        lang: String,
        /// Sign as this gateway (alipay, wechat, bank, credit_card) with its secret from
        /// LEDGER_GATEWAY_SECRETS or the data directory, as a gateway's notification is signed.
        #[arg(long)]
        gateway: Option<String>,
        /// Print only this value of the answer, as `jq -r` would: a dot-separated path
        /// (`data.payment_id`, `data.list.0.id`); strings unquoted, anything else as compact
        /// JSON. A path that names nothing exits 1.
        #[arg(long, value_name = "PATH")]
        field: Option<String>,
    },
    /// The load harness: starts the service on a fresh database and measures it (BENCHMARKS.md).
    /// It is its own binary, `ledger-bench`, built next to this one by `cargo build --release`;
    /// this verb runs it with the same arguments (`ledger bench --help` shows them).
    #[command(
        disable_help_flag = true,
        after_help = "Example:\n  ledger bench --quick"
    )]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Match a gateway settlement file against the ledger (exit 1 on any mismatch, 2 on a bad
    /// file). Columns: payment_no, gateway_trade_no (refund_no for refunds), type
    /// (payment|refund), amount, fee, settled_at.
    #[command(
        after_help = "Example:\n  ledger reconcile --settlement settlement.csv\n  ledger reconcile --settlement nov.csv --start-time 2026-11-01T00:00:00Z --end-time 2026-12-01T00:00:00Z --format csv"
    )]
    Reconcile {
        /// The settlement CSV file.
        #[arg(long)]
        settlement: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: crate::reconcile::Format,
        /// Only ledger items settled at or after this RFC 3339 time.
        #[arg(long)]
        start_time: Option<String>,
        /// Only ledger items settled before this RFC 3339 time.
        #[arg(long)]
        end_time: Option<String>,
    },
    /// Drive realistic traffic against a running service, then check that the ledger agrees
    /// with what this run did: its totals, the chain, and a reconciliation of its own payments
    /// and refunds. Ends with `everything agrees` (exit 0), whatever else the ledger holds.
    #[command(
        after_help = "Example:\n  ledger demo\n  ledger demo --payments 50 --url http://127.0.0.1:8080"
    )]
    Demo {
        /// Base URL of the service (default http://LEDGER_BIND).
        #[arg(long, env = "LEDGER_URL")]
        url: Option<String>,
        /// How many payments to create.
        #[arg(long, default_value_t = 200)]
        payments: usize,
        /// Where to write the settlement file (default: in LEDGER_DATA_DIR).
        #[arg(long)]
        settlement: Option<PathBuf>,
    },
    /// Run a simulator of a real gateway (Alipay RSA2 or WeChat Pay API v3) that speaks its
    /// exact wire format with keys of its own: a pay page, notifications retried until
    /// acknowledged, the query/refund/close APIs and fault injection. Prints the settings
    /// that point the ledger at it.
    #[command(
        after_help = "Example:\n  ledger simulate alipay            # then start `ledger serve` with the printed settings\n  ledger simulate wechat --bind 127.0.0.1:9502 --faults notify_twice=1"
    )]
    Simulate(crate::simulate::SimulateArgs),
    /// Print a completion script for a shell.
    #[command(
        after_help = "Example:\n  ledger completions bash > ~/.local/share/bash-completion/completions/ledger\n  ledger completions zsh > \"${fpath[1]}/_ledger\"\n  ledger completions fish > ~/.config/fish/completions/ledger.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The command line's definition: every setting global, so that each verb's `--help` shows
/// them and accepts them after the verb.
pub fn command() -> clap::Command {
    Cli::command().mut_args(|a| {
        if a.get_env().is_some() {
            a.global(true)
        } else {
            a
        }
    })
}

/// Parses the process's arguments; on a usage error prints clap's message and exits.
///
/// A malformed setting stops the parse before any verb runs; `ledger doctor` still answers
/// then, in its own form (one ✗ line naming the setting and its rule, exit status 1).
pub fn parse() -> Cli {
    match try_parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            let doctor = std::env::args().nth(1).as_deref() == Some("doctor");
            let bad_value = matches!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue
            );
            if doctor && bad_value {
                println!("{}", crate::doctor::settings_unparsable(&e.to_string()));
                std::process::exit(1);
            }
            if bad_value {
                let _ = e.print();
                eprintln!("{DOCTOR_HINT}");
                std::process::exit(e.exit_code());
            }
            e.exit()
        }
    }
}

/// Parses the given arguments.
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

/// Said after a start-up failure of `serve` or `migrate`.
pub const DOCTOR_HINT: &str = "run `ledger doctor` to check the setup";

/// The `ledger` binary's whole run: logging, the command line, the runtime, the verb, and the
/// process's exit with the verb's code.
///
/// It lives here rather than in main.rs so that the async code it drives is compiled once, in
/// this crate: a release build shares no generic instances between crates, and a `block_on`
/// (or `#[tokio::main]`) in the binary compiled every future under `run` a second time there
/// (about a minute of the two cores' time on every build).
pub fn main() -> ! {
    run_to_exit(async { run(parse()).await })
}

/// A binary's run: a multi-thread runtime, logging, `work`, then the process's exit with the
/// code `work` returns (2, with the error printed, when it fails).
///
/// The exit happens inside the runtime, as `#[tokio::main]` code calling
/// `std::process::exit` did: no wait for blocking tasks (a read of stdin, say) to finish.
/// Generic, so each library calling it from a plain function compiles its future there
/// (`ledger_bench::main` is the other).
pub fn run_to_exit(work: impl std::future::Future<Output = anyhow::Result<i32>>) -> ! {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    runtime.block_on(async {
        crate::telemetry::init_logging();
        match work.await {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        }
    })
}

/// Runs the parsed command; the process exit code is what it returns.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let Some(verb) = cli.command else {
        print!("{GUIDE}");
        return Ok(0);
    };
    match verb {
        Command::Serve { role } => {
            let (ledger, listener) = match start(&cli.config, role).await {
                Ok(started) => started,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    eprintln!("{DOCTOR_HINT}");
                    return Ok(2);
                }
            };
            let addr = listener.local_addr()?;
            let scheme = if ledger.state.settings.tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!(%addr, ?role, nats = ledger.state.bus.is_some(), tls = scheme == "https", "ledger serving");
            eprintln!("ledger listening on {scheme}://{addr} (console at {scheme}://{addr}/console, docs at {scheme}://{addr}/docs)");
            app::serve(ledger, listener, shutdown_signal()).await?;
            Ok(0)
        }
        Command::Migrate => {
            let migrated = async {
                let settings = cli.config.resolve()?;
                let pool = crate::store::connect(&settings.database_url, 2, true).await?;
                crate::store::migrate(&pool).await
            };
            match migrated.await {
                Ok(()) => {
                    println!("database migrated");
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    eprintln!("{DOCTOR_HINT}");
                    Ok(2)
                }
            }
        }
        Command::Doctor => crate::doctor::run(&cli.config, &mut std::io::stdout()).await,
        Command::Completions { shell } => {
            // Into a buffer first: `generate` panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "ledger", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
        Command::Verify { digest, public_key } => {
            crate::audit_cli::verify(&cli.config, digest, public_key).await
        }
        Command::Replay { check } => {
            let settings = cli.config.resolve()?;
            let pool = crate::store::connect(&settings.database_url, 8, false).await?;
            crate::store::migrate(&pool).await?;
            let ctx = crate::projections::ProjectionContext {
                master_key: settings.master_key.clone(),
            };
            let report = crate::projections::replay::replay_with(
                &pool,
                &ctx,
                check,
                true,
                cli.config.limits.replay_catchup_batch_max,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            for d in &report.drift {
                if d.differing_rows > 0 {
                    println!(
                        "DRIFT in {}: {} row(s) differ (live {}, rebuilt {})",
                        d.table, d.differing_rows, d.live_rows, d.rebuilt_rows
                    );
                }
            }
            println!(
                "replayed {} events in {:.2} s ({:.0} events/s){}",
                report.events,
                report.seconds,
                report.events_per_second,
                if report.swapped {
                    "; rebuilt tables swapped in"
                } else {
                    "; live tables untouched"
                }
            );
            Ok(if check && report.has_drift() { 1 } else { 0 })
        }
        Command::Shred { user } => {
            let settings = cli.config.resolve()?;
            let pool = crate::store::connect(&settings.database_url, 2, false).await?;
            let erased = crate::projections::shred::shred_user(&pool, &user).await?;
            println!(
                "shredded the data key of user {user:?}; {} payment(s) now show [erased]",
                erased.len()
            );
            Ok(0)
        }
        Command::Api {
            method,
            path,
            body,
            url,
            idempotency_key,
            lang,
            gateway,
            field,
        } => {
            crate::client::run_cli(
                &cli.config,
                crate::client::Request {
                    method: &method,
                    path: &path,
                    body: body.as_deref(),
                    url,
                    idempotency_key,
                    lang: &lang,
                    gateway: gateway.as_deref(),
                    field: field.as_deref(),
                },
            )
            .await
        }
        Command::Bench { args } => run_bench(&cli.config, &args),
        Command::Reconcile {
            settlement,
            format,
            start_time,
            end_time,
        } => {
            let time = |name: &str, v: Option<String>| -> anyhow::Result<_> {
                v.map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|e| {
                            anyhow::anyhow!("--{name}: {t:?} is not an RFC 3339 time: {e}")
                        })
                })
                .transpose()
            };
            let start = time("start-time", start_time)?;
            let end = time("end-time", end_time)?;
            let pool = crate::store::connect(&cli.config.database_url, 2, false).await?;
            crate::reconcile::run(
                &pool,
                &settlement,
                cli.config.limits.settlement_lines_max,
                format,
                start,
                end,
                &mut std::io::stdout(),
            )
            .await
        }
        Command::Simulate(args) => crate::simulate::run_cli(args, &cli.config.data_dir).await,
        Command::Demo {
            url,
            payments,
            settlement,
        } => {
            let base = url.unwrap_or_else(|| format!("http://{}", cli.config.bind));
            let (key_id, secret) = crate::config::client_credentials(&cli.config.data_dir)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "LEDGER_KEY_ID / LEDGER_SECRET: not set (and no development credentials in {}; start `ledger serve` once)",
                        cli.config.data_dir.display()
                    )
                })?;
            // The demo pays through the sandbox's signed JSON, which a method served by its
            // real gateway refuses (403): those methods are left out of the run.
            let mut gateways = Vec::new();
            for m in crate::domain::PaymentMethod::ALL {
                if cli.config.real_gateway(m) {
                    println!(
                        "demo: {} is served by its real gateway here; its payments are left out of the demo",
                        m.name()
                    );
                    continue;
                }
                let (id, secret) = crate::client::gateway_credentials(&cli.config, m.name())?;
                gateways.push((m, crate::client::Client::new(&base, &id, &secret)));
            }
            let pool = crate::store::connect(&cli.config.database_url, 2, false).await?;
            let settlement =
                settlement.unwrap_or_else(|| cli.config.data_dir.join("demo-settlement.csv"));
            if let Some(dir) = settlement.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("--settlement: cannot create {}: {e}", dir.display())
                })?;
            }
            let demo = crate::demo::Demo {
                client: crate::client::Client::new(&base, &key_id, &secret),
                gateways,
                pool,
                payments,
                settlement,
                progress: true,
            };
            let summary = crate::demo::run(&demo, &mut std::io::stdout()).await?;
            Ok(summary.exit_code())
        }
    }
}

/// Resolves the settings, binds the listen address and starts the service's tasks: everything
/// `serve` does before it answers, and everything `ledger doctor` checks.
async fn start(
    config: &RawConfig,
    role: ServeRole,
) -> anyhow::Result<(app::Ledger, tokio::net::TcpListener)> {
    let settings = config.resolve()?;
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| anyhow::anyhow!("LEDGER_BIND: cannot listen on {}: {e}", settings.bind))?;
    let ledger = app::build(
        settings,
        role,
        crate::gateway::sandbox::Faults::parse(
            &std::env::var("LEDGER_SANDBOX_FAULTS").unwrap_or_default(),
        )
        .map_err(|e| anyhow::anyhow!("LEDGER_SANDBOX_FAULTS: {e}"))?,
    )
    .await?;
    Ok((ledger, listener))
}

/// Runs the `ledger-bench` binary that `cargo build --release` puts next to this one, with
/// the same arguments; the settings given as flags travel as their environment variables.
fn run_bench(config: &RawConfig, args: &[String]) -> anyhow::Result<i32> {
    let exe = std::env::current_exe()?;
    let bench = exe.with_file_name(format!("ledger-bench{}", std::env::consts::EXE_SUFFIX));
    if !bench.exists() {
        anyhow::bail!(
            "the load harness is its own binary and {} is missing: build it with \
             `cargo build --release -p ledger-bench` (add `--features peer` for the cqrs-es row)",
            bench.display()
        );
    }
    let status = std::process::Command::new(&bench)
        .args(args)
        .envs(config.to_env())
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bench.display()))?;
    Ok(status.code().unwrap_or(2))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received; draining");
}
