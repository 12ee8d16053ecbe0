//! Archives end to end (issue 17, items 2 and 3), through the real agent
//! and collector: password-protected archives made by the real tools
//! (`zip -P`, `7z a -tzip -mem=AES256 -p…`, `7z a -p… -mhe=on`), each
//! followed by a password mail, fire the `ppap` alert exactly once per
//! pair, also when the archive reaches the collector after its password
//! (an agent that ships late); unrelated mails (other recipients, no
//! password wording, outside the window) do not; `encrypted_attachment`
//! fires for outside recipients only; `kiroku search --tag ppap` finds both
//! mails of every pair. A ZIP holding a tar.gz holding a file on the
//! sensitive list fires `sensitive_hash` and `kiroku trace` finds the mail
//! by the file's hash. A zip bomb is bounded and tagged `archive-bounded`
//! while the mails around it are stored as before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use kiroku_common::sha256_hex;
use kiroku_proto::{Event, GetAnnotationsRequest, SearchRequest, TraceRequest, event::Kind};
use kiroku_tests::faultproxy::{Fault, FaultProxy};
use kiroku_tests::{Env, Mode, email, free_port, send_mail, skip};

/// Whether the archive tools are here (`.ci/run` installs zip and
/// p7zip-full); the test is skipped, saying so, when they are not.
fn tools(test: &str) -> bool {
    for tool in ["zip", "7z", "tar"] {
        if Command::new(tool).arg("--help").output().is_err() {
            skip(
                test,
                &format!("{tool} is not installed (apt-get install zip p7zip-full)"),
            );
            return false;
        }
    }
    true
}

/// Runs an archive tool in `dir`.
fn run(dir: &Path, tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(tool).args(args).current_dir(dir).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A working directory for archives, with a file to put in them.
fn workdir(env: &Env) -> anyhow::Result<PathBuf> {
    let dir = env.path().join("archives");
    std::fs::create_dir_all(dir.join("docs"))?;
    std::fs::write(dir.join("docs/見積書.txt"), "見積金額: 1,200,000円\n")?;
    std::fs::write(dir.join("docs/plan.txt"), "the merger plan\n")?;
    Ok(dir)
}

/// A mail from `from` to `to` with a UTF-8 body and, optionally, one
/// attachment.
fn mail(from: &str, to: &[&str], subject: &str, body: &str, att: Option<(&str, &[u8])>) -> Vec<u8> {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let subject = format!("=?UTF-8?B?{}?=", b64(subject.as_bytes()));
    let head = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n",
        to.join(", ")
    );
    let text = format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        b64(body.as_bytes())
    );
    match att {
        None => format!("{head}{text}").into_bytes(),
        Some((name, data)) => format!(
            "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n{text}--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            b64(data)
        )
        .into_bytes(),
    }
}

fn send(
    smtp: u16,
    from: &str,
    to: &[&str],
    subject: &str,
    body: &str,
    att: Option<(&str, &[u8])>,
) -> anyhow::Result<()> {
    let sent = send_mail(smtp, from, to, &mail(from, to, subject, body, att))?;
    anyhow::ensure!(sent.code == 250, "{subject}: {sent:?}");
    Ok(())
}

/// Every stored event by subject.
async fn by_subject(env: &Env) -> anyhow::Result<HashMap<String, Event>> {
    let all = env.search_all(SearchRequest::default()).await?;
    Ok(all
        .into_iter()
        .filter(|e| matches!(e.kind, Some(Kind::Email(_))))
        .map(|e| (email(&e).subject.clone(), e))
        .collect())
}

/// Waits until `want` events are tagged `tag`; their subjects.
async fn tagged(
    env: &Env,
    tag: &str,
    want: usize,
    within: Duration,
) -> anyhow::Result<Vec<String>> {
    let req = SearchRequest {
        tag: tag.into(),
        ..Default::default()
    };
    env.wait_for(req.clone(), want, within).await?;
    let mut s: Vec<String> = env
        .search_all(req)
        .await?
        .iter()
        .map(|e| email(e).subject.clone())
        .collect();
    s.sort();
    Ok(s)
}

/// The alerts fired so far (`kiroku alerts --since 1h --json`): (kind,
/// rule, subject of the event).
async fn alerts(env: &Env, cli: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = env.kiroku(&["--config", cli, "alerts", "--since", "1h", "--json"])?;
    let subjects: HashMap<String, String> = by_subject(env)
        .await?
        .into_iter()
        .map(|(s, e)| (e.event_id, s))
        .collect();
    let mut v = Vec::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let a: serde_json::Value = serde_json::from_str(line)?;
        let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
        let subject = subjects.get(&s("event_id")).cloned().unwrap_or_default();
        v.push((s("kind"), s("rule"), subject));
    }
    v.sort();
    Ok(v)
}

fn cli_config(env: &Env) -> anyhow::Result<String> {
    let cli = env.path().join("cli.toml");
    std::fs::write(
        &cli,
        format!(
            "endpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/investigator-inv.pem\"\nkey = \"pki/investigator-inv.key\"\n",
            env.grpc
        ),
    )?;
    Ok(cli.to_string_lossy().into_owned())
}

const PPAP_RULES: &str = r#"
[[rule]]
name = "enc-out"
kind = "encrypted_attachment"
internal_domains = ["corp.example"]

[[rule]]
name = "ppap"
kind = "ppap"

# The same with a 15-second window: tells "outside the window" without a
# 30-minute test.
[[rule]]
name = "ppap-short"
kind = "ppap"
window_minutes = 0.25
"#;

#[tokio::test(flavor = "multi_thread")]
async fn ppap_pairs_fire_once_and_unrelated_mails_do_not() -> anyhow::Result<()> {
    const TEST: &str = "ppap_pairs_fire_once_and_unrelated_mails_do_not";
    if !tools(TEST) {
        return Ok(());
    }
    let env = Env::new()?;
    let dir = workdir(&env)?;
    run(&dir, "zip", &["-q", "-r", "-P", "Xy7pQ", "zc.zip", "docs"])?;
    run(
        &dir,
        "7z",
        &[
            "a",
            "-bd",
            "-tzip",
            "-mem=AES256",
            "-phunter2",
            "aes.zip",
            "docs",
        ],
    )?;
    run(
        &dir,
        "7z",
        &["a", "-bd", "-pkaitou", "-mhe=on", "hidden.7z", "docs"],
    )?;
    let zc = std::fs::read(dir.join("zc.zip"))?;
    let aes = std::fs::read(dir.join("aes.zip"))?;
    let hidden = std::fs::read(dir.join("hidden.7z"))?;
    std::fs::write(env.path().join("rules.toml"), PPAP_RULES)?;
    let _collector = env.start_collector_with("[alerts]\nrules = \"rules.toml\"\n")?;
    let cli = cli_config(&env)?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;
    // A second agent whose shipping is held back: its mail reaches the
    // collector after the password mail sent after it.
    let proxy = FaultProxy::start(env.grpc).await?;
    proxy.set(Fault::Reset);
    let late_smtp = free_port();
    let _late = env.start_agent_via("pc-2", late_smtp, &Mode::CaptureOnly, proxy.port)?;

    // 1. ZipCrypto, then the password in Japanese.
    let bob = ["bob@partner.example"];
    send(
        smtp,
        "alice@corp.example",
        &bob,
        "見積書送付",
        "見積書をお送りします。",
        Some(("見積書.zip", &zc)),
    )?;
    send(
        smtp,
        "alice@corp.example",
        &bob,
        "パスワードのお知らせ",
        "先ほどのファイルのパスワードは Xy7pQ です。",
        None,
    )?;
    // 2. AES-256 ZIP by 7z, then the password in English, to two
    // recipients of whom one had the archive.
    let dave = ["dave@partner.example"];
    send(
        smtp,
        "carol@corp.example",
        &dave,
        "contract",
        "Please find the contract attached.",
        Some(("contract.zip", &aes)),
    )?;
    send(
        smtp,
        "carol@corp.example",
        &["dave@partner.example", "erin@corp.example"],
        "re: contract",
        "The password is hunter2",
        None,
    )?;
    // 3. A 7z with encrypted names, mailed through the late agent; its
    // password through the other one, stored first.
    let frank = ["frank@partner.example"];
    send(
        late_smtp,
        "gus@corp.example",
        &frank,
        "図面",
        "図面です。",
        Some(("図面.7z", &hidden)),
    )?;
    send(
        smtp,
        "gus@corp.example",
        &frank,
        "図面の解凍パスワード",
        "解凍パスワード: kaitou",
        None,
    )?;
    env.wait_for(
        SearchRequest {
            sender: "gus@corp.example".into(),
            ..Default::default()
        },
        1,
        Duration::from_secs(30),
    )
    .await?;
    proxy.set(Fault::Pass);
    // 4. An archive whose password comes 16 s later (inside `ppap`'s 30
    // minutes, outside `ppap-short`'s 15 s), after two mails that are no
    // password notice: one to someone else, one without password wording.
    let hal = ["hal@partner.example"];
    send(
        smtp,
        "gina@corp.example",
        &hal,
        "資料",
        "資料を添付します。",
        Some(("資料.zip", &zc)),
    )?;
    // Taken once the agent has answered: the archive's time is before it,
    // so the password below is sent at least 16 s after the archive.
    let sent_at = Instant::now();
    send(
        smtp,
        "gina@corp.example",
        &["zed@other.example"],
        "別件パスワード",
        "別件のパスワードは abc です。",
        None,
    )?;
    send(
        smtp,
        "gina@corp.example",
        &hal,
        "お礼",
        "本日はありがとうございました。",
        None,
    )?;
    // 5. An encrypted archive to a colleague only: no encrypted_attachment.
    send(
        smtp,
        "ivan@corp.example",
        &["judy@corp.example"],
        "社内資料",
        "社内向けです。",
        Some(("社内.zip", &zc)),
    )?;
    let wait = Duration::from_secs(16).saturating_sub(sent_at.elapsed());
    tokio::time::sleep(wait).await;
    send(smtp, "gina@corp.example", &hal, "PW", "pw: Xy7pQ", None)?;

    // Both mails of the four pairs are tagged ppap.
    let pairs = tagged(&env, "ppap", 8, Duration::from_secs(60)).await?;
    let mut want = vec![
        "PW",
        "contract",
        "re: contract",
        "パスワードのお知らせ",
        "図面",
        "図面の解凍パスワード",
        "見積書送付",
        "資料",
    ];
    want.sort();
    assert_eq!(pairs, want);
    // They are found by the rule's name as well (`kiroku search --alert`).
    let by_rule = env
        .search_all(SearchRequest {
            alert: "ppap".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(by_rule.len(), 8, "--alert ppap");
    // Analysis of every mail is done (the last one was paired): the
    // alerts are all there, each exactly once.
    let got = alerts(&env, &cli).await?;
    let a = |kind: &str, rule: &str, subject: &str| {
        (kind.to_owned(), rule.to_owned(), subject.to_owned())
    };
    let mut want = vec![
        a("encrypted_attachment", "enc-out", "見積書送付"),
        a("encrypted_attachment", "enc-out", "contract"),
        a("encrypted_attachment", "enc-out", "図面"),
        a("encrypted_attachment", "enc-out", "資料"),
        // A pair's alert names the mail that completed it.
        a("ppap", "ppap", "パスワードのお知らせ"),
        a("ppap", "ppap", "re: contract"),
        a("ppap", "ppap", "図面"),
        a("ppap", "ppap", "PW"),
        a("ppap", "ppap-short", "パスワードのお知らせ"),
        a("ppap", "ppap-short", "re: contract"),
        a("ppap", "ppap-short", "図面"),
    ];
    want.sort();
    assert_eq!(got, want);
    let events = by_subject(&env).await?;
    assert_eq!(events.len(), 11, "every mail stored: {:?}", events.keys());
    // The pair's mails link to each other; the archives say how they are
    // encrypted and which names they list.
    let id = |subject: &str| events[subject].event_id.clone();
    let mut q = env.investigator().await?;
    let mut annotations = HashMap::new();
    for subject in ["見積書送付", "パスワードのお知らせ", "contract", "図面"] {
        let a = q
            .get_annotations(GetAnnotationsRequest {
                event_id: id(subject),
            })
            .await?
            .into_inner();
        annotations.insert(subject, a);
    }
    let links = |subject: &str| -> Vec<(String, String)> {
        annotations[subject]
            .links
            .iter()
            .map(|l| (l.event_id.clone(), l.reason.clone()))
            .collect()
    };
    let (archive, notice) = (id("見積書送付"), id("パスワードのお知らせ"));
    assert_eq!(
        links("見積書送付"),
        [(notice.clone(), format!("ppap: password notice in {notice}"))]
    );
    assert_eq!(
        links("パスワードのお知らせ"),
        [(
            archive.clone(),
            format!("ppap: password notice for {archive}")
        )]
    );
    let archive_of = |subject: &str| {
        annotations[subject]
            .attachments
            .iter()
            .find(|a| !a.container.is_empty())
            .cloned()
            .unwrap_or_default()
    };
    for (subject, encryption, names) in [
        (
            "見積書送付",
            "zipcrypto",
            vec!["docs/plan.txt", "docs/見積書.txt"],
        ),
        (
            "contract",
            "aes-256",
            vec!["docs/plan.txt", "docs/見積書.txt"],
        ),
        ("図面", "7z-aes, names hidden", vec![]),
    ] {
        let a = archive_of(subject);
        assert!(a.encrypted, "{subject}: {a:?}");
        assert_eq!(a.encryption, encryption, "{subject}");
        let mut got: Vec<&str> = a.members.iter().map(|m| m.path.as_str()).collect();
        got.sort();
        assert_eq!(got, names, "{subject}");
        assert!(a.members.iter().all(|m| m.encrypted && m.sha256.is_empty()));
    }
    // The encrypted archives are tagged so, the colleague's too.
    let enc = tagged(&env, "encrypted-attachment", 5, Duration::from_secs(10)).await?;
    assert_eq!(enc.len(), 5, "{enc:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn zipped_secrets_are_traced_and_bombs_are_bounded() -> anyhow::Result<()> {
    const TEST: &str = "zipped_secrets_are_traced_and_bombs_are_bounded";
    if !tools(TEST) {
        return Ok(());
    }
    let env = Env::new()?;
    let dir = workdir(&env)?;
    let secret = sha256_hex("the merger plan\n".as_bytes());
    // The secret two levels down: outer.zip / inner.tar.gz / docs/plan.txt.
    run(&dir, "tar", &["-czf", "inner.tar.gz", "docs/plan.txt"])?;
    run(
        &dir,
        "zip",
        &["-q", "outer.zip", "inner.tar.gz", "docs/見積書.txt"],
    )?;
    // A bomb: 128 MiB of zeros in a ZIP of about 128 KiB.
    std::fs::File::create(dir.join("zeros.bin"))?.set_len(128 << 20)?;
    run(&dir, "zip", &["-q", "-9", "bomb.zip", "zeros.bin"])?;
    let outer = std::fs::read(dir.join("outer.zip"))?;
    let bomb = std::fs::read(dir.join("bomb.zip"))?;
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    std::fs::write(
        env.path().join("rules.toml"),
        format!(
            "[[rule]]\nname = \"secret\"\nkind = \"sensitive_hash\"\nsha256 = [\"{secret}\"]\n"
        ),
    )?;
    let _collector = env.start_collector_with(
        "[alerts]\nrules = \"rules.toml\"\n[analysis.archives]\nmax_expanded_bytes = 33554432\n",
    )?;
    let cli = cli_config(&env)?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;
    let to = ["eve@other.example"];

    send(
        smtp,
        "mallory@corp.example",
        &to,
        "quarterly",
        "see attached",
        Some(("quarterly.zip", &outer)),
    )?;
    let traced = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut q = env.investigator().await?;
            let t = q
                .trace(TraceRequest {
                    sha256: secret.clone(),
                    limit: 10,
                })
                .await?
                .into_inner();
            if !t.events.is_empty() || Instant::now() > deadline {
                break t.events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let subjects: Vec<&str> = traced.iter().map(|e| email(e).subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["quarterly"],
        "trace finds the mail by the zipped file's hash"
    );
    let out = env.cli(&["trace", &secret])?;
    assert!(
        out.contains("quarterly") || out.contains(&traced[0].event_id),
        "{out}"
    );
    let got = alerts(&env, &cli).await?;
    assert_eq!(
        got,
        [(
            "sensitive_hash".to_owned(),
            "secret".to_owned(),
            "quarterly".to_owned()
        )]
    );

    // Ingest around the bomb: 20 mails before, the bomb, 20 after; every
    // one is stored, the bomb's listing is bounded and tagged.
    let batch = |n: &str| -> anyhow::Result<()> {
        for i in 0..20 {
            send(
                smtp,
                "bob@corp.example",
                &to,
                &format!("{n} {i}"),
                "hello",
                None,
            )?;
        }
        Ok(())
    };
    let bob = || SearchRequest {
        sender: "bob@corp.example".into(),
        ..Default::default()
    };
    let t = Instant::now();
    batch("before")?;
    env.wait_for(bob(), 20, Duration::from_secs(60)).await?;
    let before = t.elapsed();
    send(
        smtp,
        "mallory@corp.example",
        &to,
        "bomb",
        "big",
        Some(("bomb.zip", &bomb)),
    )?;
    let t = Instant::now();
    batch("after")?;
    env.wait_for(bob(), 40, Duration::from_secs(60)).await?;
    let after = t.elapsed();
    let bounded = tagged(&env, "archive-bounded", 1, Duration::from_secs(60)).await?;
    assert_eq!(bounded, ["bomb"]);
    eprintln!(
        "20 mails sent and stored in {:.1} s before the bomb, {:.1} s right after it",
        before.as_secs_f64(),
        after.as_secs_f64()
    );
    let events = by_subject(&env).await?;
    assert!((0..20).all(|i| events.contains_key(&format!("after {i}"))));
    let a = env
        .investigator()
        .await?
        .get_annotations(GetAnnotationsRequest {
            event_id: events["bomb"].event_id.clone(),
        })
        .await?
        .into_inner();
    let zip = a
        .attachments
        .iter()
        .find(|x| x.container == "zip")
        .cloned()
        .unwrap_or_default();
    assert!(
        zip.members_status.contains("bounded: 32 MiB expanded"),
        "{zip:?}"
    );
    assert_eq!(zip.members.len(), 1, "{zip:?}");
    assert!(zip.members[0].sha256.is_empty() && zip.members[0].status.contains("bound"));
    Ok(())
}

/// Review finding 4: an analysis batch whose index commit fails after its
/// annotations and correlator marks were written used to drop its alerts
/// (the retry fires nothing). With the first commit failing on purpose
/// (`KIROKU_TEST_FAIL_ANALYSIS_COMMITS=1`), the `encrypted_attachment`
/// alert still reaches a live follower, exactly once, after the retry.
/// Review finding 14 on the same collector: a password-protected ZIP with
/// an extra `[Content_Types].xml` entry (dressed as an Office document)
/// fires `encrypted_attachment` too.
#[tokio::test(flavor = "multi_thread")]
async fn an_alert_survives_a_failed_analysis_commit() -> anyhow::Result<()> {
    const TEST: &str = "an_alert_survives_a_failed_analysis_commit";
    if !tools(TEST) {
        return Ok(());
    }
    kiroku_tests::ensure_test_hooks()?;
    let env = Env::new()?;
    let dir = workdir(&env)?;
    run(&dir, "zip", &["-q", "-r", "-P", "Xy7pQ", "zc.zip", "docs"])?;
    let zc = std::fs::read(dir.join("zc.zip"))?;
    std::fs::write(dir.join("confidential.xlsx"), "売上見込み\n")?;
    std::fs::write(dir.join("[Content_Types].xml"), "<Types/>")?;
    run(
        &dir,
        "zip",
        &[
            "-q",
            "-P",
            "pw",
            "secret.zip",
            "confidential.xlsx",
            "[Content_Types].xml",
        ],
    )?;
    let dressed = std::fs::read(dir.join("secret.zip"))?;
    std::fs::write(env.path().join("rules.toml"), PPAP_RULES)?;
    let collector = env.start_collector_with_env(
        "[alerts]\nrules = \"rules.toml\"\n",
        &[("KIROKU_TEST_FAIL_ANALYSIS_COMMITS", "1")],
    )?;
    let cli = cli_config(&env)?;
    let follow_log = env.path().join("follow.log");
    let _follower = kiroku_tests::Proc::spawn(
        "kiroku alerts --follow",
        Command::new(kiroku_tests::bin("kiroku"))
            .args(["--config", &cli, "alerts", "--follow", "--json"])
            .current_dir(env.path()),
        &follow_log,
    )?;
    let until = |what: &str, within: Duration, ok: &dyn Fn() -> bool| -> anyhow::Result<()> {
        let end = Instant::now() + within;
        while !ok() {
            anyhow::ensure!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    until(
        "the follower's subscription",
        Duration::from_secs(15),
        &|| collector.log_text().contains("call=\"Alerts\""),
    )?;
    let smtp = free_port();
    let _agent = env.start_agent("pc-1", smtp, &Mode::CaptureOnly)?;
    send(
        smtp,
        "alice@corp.example",
        &["bob@partner.example"],
        "見積書送付",
        "見積書をお送りします。",
        Some(("見積書.zip", &zc)),
    )?;
    send(
        smtp,
        "alice@corp.example",
        &["carol@partner.example"],
        "dressed as a document",
        "see attached",
        Some(("secret.zip", &dressed)),
    )?;
    let fired = || {
        std::fs::read_to_string(&follow_log)
            .unwrap_or_default()
            .matches("\"encrypted_attachment\"")
            .count()
    };
    // The worker pauses 10 s after the failed batch, then retries.
    until(
        "the alert after the retry",
        Duration::from_secs(45),
        &|| fired() > 0,
    )?;
    assert!(
        collector
            .log_text()
            .contains("test hook: index commit failed"),
        "the injected failure happened"
    );
    // Nothing fires twice; the mails are tagged as before.
    assert_eq!(
        tagged(&env, "alert:enc-out", 2, Duration::from_secs(15)).await?,
        ["dressed as a document", "見積書送付"]
    );
    // Both alerts reach the follower, then no third one comes.
    until(
        "both alerts at the follower",
        Duration::from_secs(30),
        &|| fired() >= 2,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fired(), 2, "{}", std::fs::read_to_string(&follow_log)?);
    Ok(())
}
