//! `ledger verify`: the hash chain from genesis, and optionally a saved signed digest.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::RawConfig;
use crate::store::digest::{verify_digest, verify_digest_with_key, SignedDigest};
use crate::store::verify::verify_log;

pub async fn verify(
    config: &RawConfig,
    digest: Option<PathBuf>,
    public_key: Option<String>,
) -> anyhow::Result<i32> {
    let settings = config.resolve()?;
    let pool = crate::store::connect(&settings.database_url, 2, false).await?;
    let saved: Option<SignedDigest> = match &digest {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--digest {}: {e}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("--digest {}: not JSON: {e}", path.display()))?;
            let d = if v.get("data").is_some() {
                v["data"].clone()
            } else {
                v
            };
            let d: SignedDigest = serde_json::from_value(d)
                .map_err(|e| anyhow::anyhow!("--digest {}: not a digest: {e}", path.display()))?;
            match &public_key {
                Some(k) => verify_digest_with_key(&d, k),
                None => verify_digest(&d),
            }
            .map_err(|e| {
                anyhow::anyhow!(
                    "--digest {}: signature does not verify: {e}",
                    path.display()
                )
            })?;
            Some(d)
        }
        None => None,
    };
    let total = crate::store::head_position(&pool).await?;
    let bar = ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "verifying {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .expect("the template is valid"),
    );
    let report = verify_log(&pool, saved.as_ref().map(|d| d.position), |n| {
        bar.set_position(n as u64)
    })
    .await?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&report)?);
    let mut ok = report.ok;
    if let Some(d) = saved {
        match &report.pinned_root {
            Some(root) if *root == d.root_hash => {
                println!(
                    "the log extends the digest at position {} unchanged",
                    d.position
                );
            }
            Some(_) => {
                println!(
                    "MISMATCH: history up to position {} differs from the digest",
                    d.position
                );
                ok = false;
            }
            None => {
                println!(
                    "MISMATCH: the log no longer reaches the digest's position {}",
                    d.position
                );
                ok = false;
            }
        }
    }
    if !report.ok {
        println!(
            "BROKEN at position {}: {}",
            report.first_broken_position.unwrap_or(0),
            report.problem.as_deref().unwrap_or("")
        );
    }
    Ok(if ok { 0 } else { 1 })
}
