//! The `ledger` binary runs. This target also makes `cargo test --release` build the binary
//! (cargo builds a package's binaries only for its own integration tests), which the suite in
//! `tests/it` (package ledger-it) starts as a child process.

use std::process::Command;

#[test]
fn the_binary_answers_its_version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--version")
        .output()
        .expect("run ledger --version");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("ledger {}", env!("CARGO_PKG_VERSION")),
        "ledger --version"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ledger"))
        .arg("--help")
        .output()
        .expect("run ledger --help");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["serve", "demo", "doctor", "bench"] {
        assert!(text.contains(command), "--help names `{command}`:\n{text}");
    }
}
