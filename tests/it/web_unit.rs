//! The web pages' own unit and component tests (Vitest, `npm test` in `web/`), run from here
//! so that the README's one test command runs them too. `npm ci` installs exactly what
//! `package-lock.json` pins when `web/node_modules` is missing.

use std::path::PathBuf;
use std::process::Command;

fn npm(web: &PathBuf, args: &[&str]) -> std::process::Output {
    Command::new("npm")
        .args(args)
        .current_dir(web)
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `npm {}` (install Node.js 20+ and npm): {e}",
                args.join(" ")
            )
        })
}

#[test]
fn the_web_unit_and_component_tests_pass() {
    let web = crate::common::repo().join("web");
    if !web.join("node_modules").is_dir() {
        let out = npm(&web, &["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
        assert!(
            out.status.success(),
            "`npm ci` in web/ failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = npm(&web, &["test", "--silent"]);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "`npm test` in web/ failed:\n{report}");
    assert!(report.contains("passed"), "vitest ran no tests:\n{report}");
}
