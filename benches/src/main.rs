//! `ledger-bench`: the load harness as its own binary, so that the service binary links
//! neither the harness nor cqrs-es. `ledger bench ARGS` runs this binary with the same
//! arguments and environment; it can also be run directly.

use clap::Parser;

/// The load harness: starts the service on a fresh database and measures it (BENCHMARKS.md).
#[derive(Parser, Debug)]
#[command(
    name = "ledger bench",
    version,
    after_help = "Example:\n  ledger bench --quick\n  ledger bench --only writes,reads --seconds 30"
)]
struct Cli {
    #[command(flatten)]
    config: ledger::config::RawConfig,
    #[command(flatten)]
    args: ledger_bench::BenchArgs,
}

fn main() {
    let cli = Cli::parse();
    ledger_bench::main(&cli.config, cli.args)
}
