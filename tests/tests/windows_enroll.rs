//! Enrollment of the Windows agent (issue 22, item 7) under Wine: the
//! cross-built `kiroku-agent.exe` with a one-time token and no certificate
//! makes its key, enrolls on a Linux collector's enrollment listener under
//! its (Wine) computer name, writes key and chain (Z:\ paths), ships a mail
//! over mTLS with the token's group; a second Windows agent with the same
//! token is refused and exits saying why, writing nothing; the audit log
//! shows both. Renewal runs only in the Linux suite (`enrollment.rs`): the
//! exe is built without test hooks, so no certificate lives seconds here.
//!
//! Skipped (with the reason, never passed) when Wine or the exe is
//! missing: see `kiroku_tests::wine`.

use std::time::Duration;

use kiroku_proto::SearchRequest;
use kiroku_tests::enroll::{
    admin_audit, calls, cert_identity, collector_keys, start_collector, tokens, wait_exit,
};
use kiroku_tests::winagent::{WinAgent, stop_windows};
use kiroku_tests::wine::Wine;
use kiroku_tests::{Env, Mode, free_port, send_mail, skip};

const TEST: &str = "windows_agent_enrolls_with_a_token_and_ships";

#[tokio::test(flavor = "multi_thread")]
async fn windows_agent_enrolls_with_a_token_and_ships() -> anyhow::Result<()> {
    let wine = match Wine::get() {
        Ok(w) => w,
        Err(why) => {
            skip(TEST, &why);
            return Ok(());
        }
    };
    let env = Env::new()?;
    let mut e = start_collector(&env, &[])?;
    let token = tokens(&env, "admin-boss", &["--group", "desk"])?;
    let keys = collector_keys(&token[0], e.port, None);
    let smtp = free_port();
    let x = WinAgent {
        collector_extra: &keys,
        no_cert: true,
        ..WinAgent::default()
    };
    let mut agent = env.start_windows_agent_with(wine, "pc-w", smtp, &Mode::CaptureOnly, &x)?;
    let cert = env.pki().join("agent-pc-w.pem");
    let key = env.pki().join("agent-pc-w.key");
    assert!(key.exists(), "the key was made on the agent");
    // The key is created with an explicit protected DACL (SYSTEM,
    // Administrators, the creating account: no Everyone/Users entry);
    // Wine maps a DACL onto the Unix mode, so the key has no access for
    // "others" while the certificate, which inherits, is world-readable.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| -> anyhow::Result<u32> {
            Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
        };
        let (k, c) = (mode(&key)?, mode(&cert)?);
        assert_eq!(k & 0o007, 0, "key mode {k:o}: no access for others");
        assert_ne!(c & 0o004, 0, "cert mode {c:o} (the inherited default)");
    }
    // The agent id comes from the computer name Windows (Wine) reports,
    // which Wine takes from the Linux host name.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let host = host.trim().split('.').next().unwrap_or_default();
    let want = kiroku_common::pki::enroll::agent_id_from_computer_name(host)
        .ok_or_else(|| anyhow::anyhow!("host name {host:?} makes no agent id"))?;
    assert_eq!(
        cert_identity(&cert)?,
        ("agent".into(), want.clone(), Some("desk".into()))
    );
    send_mail(
        smtp,
        "a@corp.example",
        &["b@example.org"],
        b"Subject: from windows\r\n\r\nhi\r\n",
    )?;
    let events = env
        .wait_for(SearchRequest::default(), 1, Duration::from_secs(60))
        .await?;
    assert_eq!(events[0].agent_id, want);
    assert_eq!(events[0].agent_group, "desk");
    stop_windows(&mut agent, Duration::from_secs(20));

    // The same token for a second PC: refused, nothing written.
    let keys2 = collector_keys(&token[0], e.port, Some("pc-w2"));
    let x2 = WinAgent {
        collector_extra: &keys2,
        no_cert: true,
        no_wait: true,
        ..WinAgent::default()
    };
    let mut second =
        env.start_windows_agent_with(wine, "pc-w2", free_port(), &Mode::CaptureOnly, &x2)?;
    let code = wait_exit(&mut second, Duration::from_secs(90))?;
    let log = second.log_text();
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("used already"), "{log}");
    assert!(!env.pki().join("agent-pc-w2.pem").exists());
    assert!(!env.pki().join("agent-pc-w2.key").exists());

    let audit = admin_audit(&env)?;
    let enroll = calls(&audit, "Enroll");
    assert!(
        enroll
            .iter()
            .any(|d| d.contains(&format!("enrolled agent {want} ")) && d.contains("group desk")),
        "{enroll:#?}"
    );
    assert!(
        enroll
            .iter()
            .any(|d| d.contains("REFUSED") && d.contains("used already")),
        "{enroll:#?}"
    );
    e.collector.terminate();
    Ok(())
}
