//! The investigation walk-through of the README, end to end with real
//! capture: a confidential file is created, renamed, mailed as an
//! attachment through the agent's relay to an outside address and copied
//! onto a removable volume; `kiroku trace` finds every step from the
//! content hash, the alerts fired once each, and `kiroku report exfil`
//! counts both exits. Needs root for the removable volume (a tmpfs);
//! without it the removable steps are skipped and said so.

use std::time::{Duration, Instant};

use kiroku_proto::{SearchRequest, event::Kind};
use kiroku_tests::{Env, Mode, TmpfsMount, Upstream, free_port, is_root, send_mail, skip};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);

fn mail_with(name: &str, data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "From: alice@corp.example\r\nTo: rival@elsewhere.example\r\nSubject: holiday pictures\r\nMessage-ID: <walk@corp.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_file_mailed_and_copied_to_usb_is_traced_alerted_and_reported() -> anyhow::Result<()>
{
    let env = Env::new()?;
    let upstream = Upstream::start(&env)?;
    std::fs::write(
        env.path().join("rules.toml"),
        r#"[[rule]]
name = "attachment-outside"
kind = "external_attachment"
internal_domains = ["corp.example"]

[[rule]]
name = "confidential-moved"
kind = "sensitive_dir"
paths = ["**/Confidential/**"]

[[rule]]
name = "usb-copy"
kind = "removable_copy"
"#,
    )?;
    let _collector =
        env.start_collector_with("[alerts]\nrules = \"rules.toml\"\nreload_secs = 1\n")?;
    let home = env.path().join("home");
    let confidential = home.join("Confidential");
    std::fs::create_dir_all(&confidential)?;
    let media = env.path().join("media");
    let usb = media.join("usb1");
    std::fs::create_dir_all(&usb)?;
    let smtp = free_port();
    let mut agent = env.start_agent_with(
        "pc-alice",
        smtp,
        &Mode::Relay(upstream.port),
        &format!(
            "[files]\nwatch = [{home:?}]\ncoalesce_ms = 200\nremovable_roots = [{media:?}]\nremovable_auto = false\n"
        ),
    )?;
    let deadline = Instant::now() + WAIT;
    while !agent.log_text().contains("file capture watching") {
        anyhow::ensure!(agent.is_running(), "agent died:\n{}", agent.log_text());
        anyhow::ensure!(Instant::now() < deadline, "never watching");
        std::thread::sleep(Duration::from_millis(50));
    }

    // 1. The file is created under Confidential, then renamed and moved.
    let data = b"Q3 forecast, not for distribution\n".repeat(500);
    let hash = hex::encode(Sha256::digest(&data));
    std::fs::write(confidential.join("Q3 forecast.xlsx"), &data)?;
    let created = env
        .wait_for(
            SearchRequest {
                sha256: hash.clone(),
                kind: "file".into(),
                ..Default::default()
            },
            1,
            WAIT,
        )
        .await?;
    assert!(!created.is_empty());
    std::fs::rename(
        confidential.join("Q3 forecast.xlsx"),
        home.join("holiday.xlsx"),
    )?;
    env.wait_for(
        SearchRequest {
            kind: "file".into(),
            operation: "rename".into(),
            path: "holiday".into(),
            ..Default::default()
        },
        1,
        WAIT,
    )
    .await?;

    // 2. Mailed, under its new name, to an outside address through the relay.
    let sent = send_mail(
        smtp,
        "alice@corp.example",
        &["rival@elsewhere.example"],
        &mail_with("holiday.xlsx", &std::fs::read(home.join("holiday.xlsx"))?),
    )?;
    assert_eq!(sent.code, 250, "{sent:?}");

    // 3. Copied onto a USB stick (a tmpfs mounted under the removable root).
    let _mount = if is_root() {
        let m = TmpfsMount::mount(&usb)?;
        env.wait_for(
            SearchRequest {
                kind: "file".into(),
                operation: "volume_mounted".into(),
                ..Default::default()
            },
            1,
            WAIT,
        )
        .await?;
        std::fs::copy(home.join("holiday.xlsx"), usb.join("holiday.xlsx"))?;
        Some(m)
    } else {
        skip(
            "walkthrough removable copy",
            "not root: cannot mount the test's USB volume",
        );
        None
    };
    let removable = _mount.is_some();

    // 4. Trace from the hash: creation (old name), mail, USB copy, in order.
    let want = 2 + usize::from(removable);
    let deadline = Instant::now() + WAIT;
    let trace = loop {
        let out = env.cli(&["trace", &hash, "--json"])?;
        let lines: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let has = |needle: &str| lines.iter().any(|l| l.to_string().contains(needle));
        let complete = has("Q3 forecast.xlsx")
            && has("rival@elsewhere.example")
            && (!removable || has("copy_to_removable"));
        if (complete && lines.len() >= want) || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let text: Vec<String> = trace.iter().map(|l| l.to_string()).collect();
    let pos = |needle: &str| text.iter().position(|l| l.contains(needle));
    let created_at = pos("Q3 forecast.xlsx").expect("trace shows the file under its first name");
    let mailed_at = pos("rival@elsewhere.example").expect("trace shows the mail");
    assert!(created_at < mailed_at, "{text:#?}");
    if removable {
        let usb_at = pos("copy_to_removable").expect("trace shows the USB copy");
        assert!(mailed_at < usb_at, "{text:#?}");
        let copy = env
            .wait_for(
                SearchRequest {
                    kind: "file".into(),
                    operation: "copy_to_removable".into(),
                    ..Default::default()
                },
                1,
                WAIT,
            )
            .await?;
        match &copy[0].kind {
            Some(Kind::File(f)) => {
                assert!(f.source_path.ends_with("holiday.xlsx"), "{f:?}");
                assert_eq!(f.sha256, hash);
            }
            other => panic!("{other:?}"),
        }
    }
    let table = env.cli(&["trace", &hash])?;
    assert!(table.contains("holiday.xlsx"), "{table}");

    // 5. Alerts: each rule once for this story.
    let deadline = Instant::now() + WAIT;
    let alerts = loop {
        let out = env.cli(&["alerts", "--since", "1h", "--json"])?;
        let rules: Vec<String> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["rule"].as_str().map(str::to_owned))
            .collect();
        let done = rules.iter().any(|r| r == "attachment-outside")
            && rules.iter().any(|r| r == "confidential-moved")
            && (!removable || rules.iter().any(|r| r == "usb-copy"));
        if done || Instant::now() > deadline {
            break rules;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let count = |r: &str| alerts.iter().filter(|a| *a == r).count();
    assert_eq!(count("attachment-outside"), 1, "{alerts:?}");
    assert_eq!(count("usb-copy"), usize::from(removable), "{alerts:?}");
    // The content left its directory twice (by mail, and to the USB
    // stick); the rename inside the watched tree counts too.
    assert!(count("confidential-moved") >= 1, "{alerts:?}");

    // 6. The exfiltration report counts both exits.
    let report = env.cli(&["report", "exfil", "--from", "1h", "--json"])?;
    let report: serde_json::Value = serde_json::from_str(&report)?;
    let files = report["files"].as_array().cloned().unwrap_or_default();
    let methods: Vec<&str> = files.iter().filter_map(|f| f["method"].as_str()).collect();
    assert_eq!(
        methods.iter().filter(|m| **m == "mail").count(),
        1,
        "{report}"
    );
    assert_eq!(
        methods.iter().filter(|m| **m == "removable").count(),
        usize::from(removable),
        "{report}"
    );
    let chart = env.cli(&["report", "exfil", "--from", "1h"])?;
    assert!(chart.contains("holiday.xlsx"), "{chart}");
    Ok(())
}
