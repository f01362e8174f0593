//! Builds the web pages (`web/`, Vue 3 + Vite) with the machine's Node and npm when their
//! sources changed, and embeds the built files (`web/dist`) in the binary, so that
//! `cargo run --release -- serve` serves the pages with no other process.
//!
//! `LEDGER_SKIP_WEB_BUILD=1` builds the binary without running npm (the pages then say they
//! were not built), for machines that only need the API.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// What the web build reads: a change to any of these rebuilds the pages.
const SOURCES: [&str; 8] = [
    "src",
    "public",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
    "tsconfig.node.json",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = root.join("web");
    for s in SOURCES {
        println!("cargo:rerun-if-changed=web/{s}");
    }
    println!("cargo:rerun-if-env-changed=LEDGER_SKIP_WEB_BUILD");
    let dist = web.join("dist");
    let skip = std::env::var("LEDGER_SKIP_WEB_BUILD").is_ok_and(|v| v == "1");
    if !skip && newest(&web, &SOURCES) > modified(&dist.join("index.html")) {
        build_pages(&web);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    fs::write(out.join("web_assets.rs"), assets_source(&dist)).expect("OUT_DIR is writable");
}

fn build_pages(web: &Path) {
    if Command::new("npm").arg("--version").output().is_err() {
        panic!(
            "building the web pages needs Node.js 20 or newer with npm, and `npm` was not found: \
             install them (Debian: `apt-get install nodejs npm`), or set LEDGER_SKIP_WEB_BUILD=1 \
             to build the service without its pages"
        );
    }
    let installed = web.join("node_modules").join(".package-lock.json");
    if modified(&web.join("package-lock.json")) > modified(&installed) {
        run(web, &["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    }
    run(web, &["run", "build", "--silent"]);
}

fn run(web: &Path, args: &[&str]) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(web)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `npm {}`: {e}", args.join(" ")));
    if !status.success() {
        panic!(
            "`npm {}` in web/ failed ({status}); see its output above",
            args.join(" ")
        );
    }
}

fn modified(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The newest modification time under the given sources of `web`.
fn newest(web: &Path, sources: &[&str]) -> SystemTime {
    fn walk(path: &Path, newest: &mut SystemTime) {
        *newest = (*newest).max(modified(path));
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                walk(&e.path(), newest);
            }
        }
    }
    let mut t = SystemTime::UNIX_EPOCH;
    for s in sources {
        walk(&web.join(s), &mut t);
    }
    t
}

/// `static WEB_ASSETS: &[(path, bytes)]` over every file of `dist` (paths with `/`).
fn assets_source(dist: &Path) -> String {
    let mut files = Vec::new();
    collect(dist, dist, &mut files);
    files.sort();
    let mut src = String::from("/// The built web pages: (path under `web/dist`, bytes).\n");
    src.push_str("pub static WEB_ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in files {
        src.push_str(&format!(
            "    ({rel:?}, include_bytes!({abs:?})),\n",
            abs = abs.display().to_string()
        ));
    }
    src.push_str("];\n");
    src
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(base, &p, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, p));
        }
    }
}
