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
    // build.rs rebuilds the pages (and cargo the service) when anything under web/src is
    // newer than its last run: running the pages' tests must leave the sources untouched.
    let sources_before = newest_source(&web.join("src"));
    let out = npm(&web, &["test", "--silent"]);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "`npm test` in web/ failed:\n{report}");
    assert!(report.contains("passed"), "vitest ran no tests:\n{report}");
    assert_eq!(
        newest_source(&web.join("src")),
        sources_before,
        "the web tests wrote a file under web/src (the next cargo command would rebuild)"
    );
}

/// The newest modification time of a file under `dir`, and that file.
fn newest_source(dir: &std::path::Path) -> (std::time::SystemTime, PathBuf) {
    let mut newest = (std::time::SystemTime::UNIX_EPOCH, dir.to_path_buf());
    for entry in std::fs::read_dir(dir)
        .expect("web/src is readable")
        .flatten()
    {
        let path = entry.path();
        let found = if path.is_dir() {
            newest_source(&path)
        } else {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .expect("a file's modification time");
            (modified, path)
        };
        if found.0 > newest.0 {
            newest = found;
        }
    }
    newest
}
