//! The `ledger` binary runs. This target also makes `cargo test` build the binary
//! (cargo builds a package's binaries only for its own integration tests), which the suite in
//! `tests/it` (package ledger-it) starts as a child process.

use std::process::Command;

/// What `ledger ARG` prints, after checking that it exits 0.
fn ledger(arg: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("run ledger {arg}: {e}"));
    assert!(out.status.success(), "ledger {arg}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_binary_answers_its_version_and_help() {
    assert_eq!(
        ledger("--version").trim(),
        format!("ledger {}", env!("CARGO_PKG_VERSION"))
    );
    let help = ledger("--help");
    for command in ["serve", "demo", "doctor", "bench"] {
        assert!(help.contains(command), "--help names `{command}`:\n{help}");
    }
}
