//! The command line (SPEC §10).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::{self, ServeRole};
use crate::config::RawConfig;

#[derive(Parser, Debug)]
#[command(name = "ledger", version, about = "Event-sourced payment ledger")]
pub struct Cli {
    #[command(flatten)]
    pub config: RawConfig,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service (API, relay, projectors).
    Serve {
        #[arg(long, value_enum, default_value = "all")]
        role: ServeRole,
    },
    /// Create the database if missing and apply migrations.
    Migrate,
    /// Check the hash chain from genesis, optionally against a saved signed digest.
    Verify {
        /// A digest saved from `GET /api/v1/audit/digest` (the `data` object or the envelope).
        #[arg(long)]
        digest: Option<PathBuf>,
        /// The public key you trust (hex); defaults to the one in the digest.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Rebuild every read table from the log, compare with the live ones, and swap them in.
    Replay {
        /// Only rebuild and report drift; leave the live tables alone.
        #[arg(long)]
        check: bool,
    },
    /// Destroy a user's data key (crypto-shredding of their payer data).
    Shred {
        #[arg(long)]
        user: String,
    },
    /// Send a signed request: `ledger api GET /api/v1/payments` or `ledger api POST PATH BODY`.
    Api {
        method: String,
        path: String,
        body: Option<String>,
        /// Base URL of the service (default http://LEDGER_BIND).
        #[arg(long, env = "LEDGER_URL")]
        url: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long, default_value = "en")]
        lang: String,
        /// Sign as this gateway (alipay, wechat, bank, credit_card) with its secret from
        /// LEDGER_GATEWAY_SECRETS or the data directory, as a gateway's notification is signed.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// The load harness: starts the service on a fresh database and measures it (BENCHMARKS.md).
    /// It is its own binary, `ledger-bench`, built next to this one by `cargo build --release`;
    /// this verb runs it with the same arguments (`ledger bench --help` shows them).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Match a gateway settlement file against the ledger (exit 1 on any mismatch, 2 on a bad
    /// file). Columns: payment_no, gateway_trade_no (refund_no for refunds), type
    /// (payment|refund), amount, fee, settled_at.
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
    /// Drive realistic traffic against a running service, then show totals, verify the chain
    /// and reconcile a settlement file of what was paid and refunded.
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
}

/// Runs the parsed command; the process exit code is what it returns.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve { role } => {
            let settings = cli.config.resolve()?;
            let listener = tokio::net::TcpListener::bind(settings.bind)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("LEDGER_BIND: cannot listen on {}: {e}", settings.bind)
                })?;
            let addr = listener.local_addr()?;
            let ledger = app::build(
                settings,
                role,
                crate::gateway::sandbox::Faults::parse(
                    &std::env::var("LEDGER_SANDBOX_FAULTS").unwrap_or_default(),
                )
                .map_err(|e| anyhow::anyhow!("LEDGER_SANDBOX_FAULTS: {e}"))?,
            )
            .await?;
            let scheme = if ledger.state.settings.tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!(%addr, ?role, nats = ledger.state.bus.is_some(), tls = scheme == "https", "ledger serving");
            eprintln!("ledger listening on {scheme}://{addr} (docs at {scheme}://{addr}/docs)");
            app::serve(ledger, listener, shutdown_signal()).await?;
            Ok(0)
        }
        Command::Migrate => {
            let settings = cli.config.resolve()?;
            let pool = crate::store::connect(&settings.database_url, 2, true).await?;
            crate::store::migrate(&pool).await?;
            println!("database migrated");
            Ok(0)
        }
        Command::Verify { digest, public_key } => {
            crate::audit_cli::verify(&cli.config, digest, public_key).await
        }
        Command::Replay { check } => {
            let settings = cli.config.resolve()?;
            let pool = crate::store::connect(&settings.database_url, 4, false).await?;
            crate::store::migrate(&pool).await?;
            let ctx = crate::projections::ProjectionContext {
                master_key: settings.master_key.clone(),
            };
            let report = crate::projections::replay::replay(&pool, &ctx, check, true).await?;
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
                format,
                start,
                end,
                &mut std::io::stdout(),
            )
            .await
        }
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
            let mut gateways = Vec::new();
            for m in crate::domain::PaymentMethod::ALL {
                let (id, secret) = crate::client::gateway_credentials(&cli.config, m.name())?;
                gateways.push((m, crate::client::Client::new(&base, &id, &secret)));
            }
            let pool = crate::store::connect(&cli.config.database_url, 2, false).await?;
            let demo = crate::demo::Demo {
                client: crate::client::Client::new(&base, &key_id, &secret),
                gateways,
                pool,
                payments,
                settlement: settlement
                    .unwrap_or_else(|| cli.config.data_dir.join("demo-settlement.csv")),
                progress: true,
            };
            let summary = crate::demo::run(&demo, &mut std::io::stdout()).await?;
            Ok(summary.exit_code())
        }
    }
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
