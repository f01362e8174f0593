//! The `ledger` binary: parse the command line and configuration, install telemetry, run.

#[tokio::main]
async fn main() {
    ledger::telemetry::init_logging();
    let cli = ledger::cli::parse();
    match ledger::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
