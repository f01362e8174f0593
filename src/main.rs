//! The `ledger` binary: everything is in the library (`ledger::cli::main`).

fn main() {
    ledger::cli::main()
}
