//! Issue 18, item 6: administrative actions in the hash-chained audit log,
//! next to the queries. A rules reload, a revocation list change and a
//! repair run each appear in `kiroku audit --kind admin` with who did it
//! and the file's SHA-256; `--kind query` leaves them out; the chain of the
//! mixed log verifies.

use std::process::Command;
use std::time::{Duration, Instant};

use kiroku_tests::{Env, bin};
use sha2::{Digest, Sha256};

/// Runs `kiroku` as the admin; returns (exit code, stdout, stderr).
fn admin_cli(env: &Env, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    env.cli_as("admin-boss", args)
}

/// The entries `kiroku audit --kind KIND --json` prints (the chain intact).
fn audit_json(env: &Env, kind: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let (code, out, err) = admin_cli(env, &["audit", "--kind", kind, "--json", "--limit", "1000"])?;
    anyhow::ensure!(code == 0, "kiroku audit --kind {kind}: exit {code}: {err}");
    anyhow::ensure!(err.contains("audit chain intact"), "{err}");
    out.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn sha256_file(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

/// Waits until an admin entry with `call` whose detail contains `needle`
/// is in the log.
async fn wait_admin(env: &Env, call: &str, needle: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = audit_json(env, "admin")?;
        if let Some(e) = entries
            .iter()
            .find(|e| e["call"] == call && e["detail"].as_str().is_some_and(|d| d.contains(needle)))
        {
            return Ok(e.clone());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no admin entry {call} with {needle}: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_reloads_crl_changes_and_repairs_are_admin_entries_with_who_and_hash()
-> anyhow::Result<()> {
    let env = Env::new()?;
    let pki = env.pki();
    let p = pki.to_string_lossy().into_owned();
    env.issue("investigator", "carol", &[])?;
    env.kiroku(&["certs", "revoke", "--dir", &p])?; // an empty list
    let crl = pki.join("crl.pem");
    let rules = env.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"usb\"\nkind = \"removable_copy\"\n",
    )?;
    let mut collector = env.start_collector_full(
        &format!("crl = {:?}", crl.to_string_lossy()),
        "[alerts]\nrules = \"rules.toml\"\nreload_secs = 1\n",
    )?;

    // The start names the files in force, each with its hash.
    let start = wait_admin(&env, "ConfigReload", "started").await?;
    let detail = start["detail"].as_str().unwrap_or_default();
    assert_eq!(start["identity"], "collector");
    assert!(
        detail.contains(&sha256_file(&rules)?) && detail.contains(&sha256_file(&crl)?),
        "{detail}"
    );

    // A query, to see that the kinds are told apart.
    env.cli(&["search", "--subject", "nothing"])?;

    // A rules change is picked up and recorded with the new file's hash.
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"usb2\"\nkind = \"removable_copy\"\n",
    )?;
    let new_rules = sha256_file(&rules)?;
    let e = wait_admin(&env, "RulesReload", &new_rules).await?;
    assert_eq!(e["identity"], "collector");
    assert!(
        e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 rules in force")),
        "{e}"
    );

    // A revocation changes the CRL: a CRL entry with its new hash.
    env.kiroku(&[
        "certs",
        "revoke",
        "--dir",
        &p,
        "--cert",
        &pki.join("investigator-carol.pem").to_string_lossy(),
    ])?;
    let new_crl = sha256_file(&crl)?;
    wait_admin(&env, "CrlReload", &new_crl).await?;

    // Queries only: none of the admin entries.
    let queries = audit_json(&env, "query")?;
    assert!(
        queries.iter().any(|e| e["call"] == "Search"),
        "{queries:#?}"
    );
    assert!(queries.iter().all(|e| e["kind"] != "admin"), "{queries:#?}");
    let admins = audit_json(&env, "admin")?;
    assert!(admins.iter().all(|e| e["kind"] == "admin"), "{admins:#?}");
    collector.terminate();

    // An offline repair records itself, with who ran it.
    let out = Command::new(bin("kiroku-collector"))
        .arg("--config")
        .arg(env.path().join("collector.toml"))
        .arg("repair")
        .env("USER", "opal")
        .env_remove("SUDO_USER")
        .output()?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _collector = env.start_collector_full(
        &format!("crl = {:?}", crl.to_string_lossy()),
        "[alerts]\nrules = \"rules.toml\"\nreload_secs = 1\n",
    )?;
    let e = wait_admin(&env, "Repair", "everything sound").await?;
    assert_eq!(e["identity"], "local/opal");
    // Every entry of the log, both kinds, still chains: the head in the
    // metadata followed the offline repair (no "added by something else").
    let (code, text, err) = admin_cli(&env, &["audit", "--limit", "1000"])?;
    assert_eq!(code, 0, "{text}{err}");
    assert!(text.contains("admin") && text.contains("query"), "{text}");
    Ok(())
}
