//! Case export end to end (issue 18, item 7): mails relayed through a real
//! agent to a sink and file events of the same agent, stored by a real
//! collector that writes signed checkpoints every 2 s, exported with
//! `kiroku export --case` by an admin; the bundle is checked by `kiroku
//! verify-bundle` and by standard tools alone (`openssl verify`, `openssl
//! dgst -verify`, `sha256sum -c`, the README's check for extra files), and
//! an investigator's look at one mail and the export itself are in its
//! audit entries. Then copies of it are altered: a byte of a mail changed,
//! a mail truncated, one padded, and one changed with the manifest and
//! SHA256SUMS edited to match — each fails `verify-bundle`, and the
//! standard tools fail too (`sha256sum -c` for the first three, the
//! signature for the last).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kiroku_proto::SearchRequest;
use kiroku_tests::{Env, Mode, Proc, Upstream, bin, free_port, send_mail, skip};

const WAIT: Duration = Duration::from_secs(60);
const AGENT: &str = "pc-case";

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output()?;
    Ok(out)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kiroku` as the admin (exports are for admins only).
fn admin_cli(env: &Env, args: &[&str]) -> anyhow::Result<Output> {
    let cfg = env.path().join("admin-cli.toml");
    if !cfg.exists() {
        std::fs::write(
            &cfg,
            format!(
                "endpoint = \"https://127.0.0.1:{}\"\nserver_name = \"localhost\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/admin-boss.pem\"\nkey = \"pki/admin-boss.key\"\n",
                env.grpc
            ),
        )?;
    }
    run(Command::new(bin("kiroku"))
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .current_dir(env.path()))
}

fn verify_bundle(env: &Env, dir: &Path) -> anyhow::Result<Output> {
    run(Command::new(bin("kiroku"))
        .arg("verify-bundle")
        .arg(dir)
        .arg("--ca")
        .arg(env.pki().join("ca.pem"))
        .current_dir(env.path()))
}

/// A shell command run in the bundle directory (bash: the README's check
/// for extra files uses process substitution).
fn sh(dir: &Path, script: &str) -> anyhow::Result<Output> {
    run(Command::new("bash").arg("-c").arg(script).current_dir(dir))
}

fn mail(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: bob@example.com\r\nTo: eve@elsewhere.example\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.com>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Exports the agent's events into `out`, again until every event is
/// covered by a signed checkpoint (one is written every 2 s), up to WAIT.
fn export_covered(env: &Env, out: &Path, events: usize) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    let mut n = 0;
    loop {
        n += 1;
        let dir = out.with_extension(format!("try{n}"));
        let o = admin_cli(
            env,
            &[
                "export",
                "--case",
                "case-1 (leak)",
                "--reason",
                "HR request 17",
                "--agent",
                AGENT,
                "--out",
                dir.to_str().unwrap_or_default(),
            ],
        )?;
        anyhow::ensure!(o.status.success(), "export failed: {}", text(&o));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
        let list = m["events"].as_array().cloned().unwrap_or_default();
        let covered = list.iter().filter(|e| e["checkpoint"].is_u64()).count();
        if list.len() >= events && covered == list.len() {
            std::fs::rename(&dir, out)?;
            return Ok(m);
        }
        std::fs::remove_dir_all(&dir)?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "after {WAIT:?} only {covered} of {} events are covered by a checkpoint",
            list.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for ent in std::fs::read_dir(from)? {
        let ent = ent?;
        let dest = to.join(ent.file_name());
        if ent.file_type()?.is_dir() {
            copy_dir(&ent.path(), &dest)?;
        } else {
            std::fs::copy(ent.path(), dest)?;
        }
    }
    Ok(())
}

/// The first mail file of the bundle.
fn a_mail(m: &serde_json::Value) -> anyhow::Result<String> {
    m["events"]
        .as_array()
        .and_then(|l| l.iter().find_map(|e| e["mail"].as_str()))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no mail in the bundle: {m}"))
}

/// The manifest and SHA256SUMS rewritten to list `path` as it now is.
fn relist(dir: &Path, path: &str) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let data = std::fs::read(dir.join(path))?;
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    for f in m["files"].as_array_mut().into_iter().flatten() {
        if f["path"] == path {
            f["sha256"] = hex::encode(Sha256::digest(&data)).into();
            f["bytes"] = data.len().into();
        }
    }
    let bytes = format!("{}\n", serde_json::to_string_pretty(&m)?);
    std::fs::write(dir.join("manifest.json"), &bytes)?;
    let sums: String = std::fs::read_to_string(dir.join("SHA256SUMS"))?
        .lines()
        .map(|l| {
            let name = &l[66..];
            if name == path {
                format!("{}  {name}\n", hex::encode(Sha256::digest(&data)))
            } else if name == "manifest.json" {
                format!(
                    "{}  {name}\n",
                    hex::encode(Sha256::digest(bytes.as_bytes()))
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.join("SHA256SUMS"), sums)?;
    Ok(())
}

const OPENSSL_CHECK: &str = "set -e
openssl verify -CAfile \"$CA\" ca-chain/signer.pem
openssl x509 -in ca-chain/signer.pem -noout -ext subjectAltName | grep -q 'URI:kiroku://signer/'
openssl x509 -in ca-chain/signer.pem -noout -pubkey > \"$TMPD/signer.pub\"
openssl dgst -sha256 -verify \"$TMPD/signer.pub\" -signature manifest.sig manifest.json
openssl dgst -sha256 -verify \"$TMPD/signer.pub\" -signature SHA256SUMS.sig SHA256SUMS
";

const SUMS_CHECK: &str = "sha256sum --strict -c SHA256SUMS";

/// The README's check that nothing was added: prints extra files.
const EXTRA_CHECK: &str = "find . -type f ! -path ./SHA256SUMS ! -path ./SHA256SUMS.sig ! -path ./manifest.sig \
    | sed 's|^\\./||' | sort | comm -23 - <(cut -c67- SHA256SUMS | sort)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_bundle_verifies_offline_and_alterations_fail() -> anyhow::Result<()> {
    for tool in ["openssl", "sha256sum", "bash"] {
        if Command::new(tool).arg("--version").output().is_err() {
            skip("evidence_export", &format!("{tool} is not installed"));
            return Ok(());
        }
    }
    let env = Env::new()?;
    let (cert, key) = env.issue("signer", "localhost", &[])?;
    let _collector = env.start_collector_with(&format!(
        "[checkpoint]\ninterval = \"2s\"\nsigning_cert = {cert:?}\nsigning_key = {key:?}\n"
    ))?;
    let upstream = Upstream::start(&env)?;
    let watched = env.path().join("watched");
    std::fs::create_dir_all(&watched)?;
    let smtp = free_port();
    let agent = env.start_agent_with(
        AGENT,
        smtp,
        &Mode::Relay(upstream.port),
        &format!("[files]\nwatch = [{watched:?}]\ncoalesce_ms = 200\nremovable_auto = false\n"),
    )?;
    wait_watching(&agent)?;

    for (subject, body) in [
        ("case-mail-1", "first"),
        ("case-mail-2", "second, with\r\n..dots"),
    ] {
        let sent = send_mail(
            smtp,
            "bob@example.com",
            &["eve@elsewhere.example"],
            &mail(subject, body),
        )?;
        anyhow::ensure!(sent.code == 250, "{subject}: {}", sent.reply);
    }
    std::fs::write(watched.join("q3-figures.csv"), b"revenue,1\n")?;
    let mails = env
        .wait_for(
            SearchRequest {
                agent_id: AGENT.into(),
                kind: "email".into(),
                ..Default::default()
            },
            2,
            WAIT,
        )
        .await?;
    let files = env
        .wait_for(
            SearchRequest {
                agent_id: AGENT.into(),
                kind: "file".into(),
                ..Default::default()
            },
            1,
            WAIT,
        )
        .await?;
    // An investigator reads one mail: that query belongs in the bundle.
    let looked_at = mails[0].event_id.clone();
    env.raw(&looked_at).await?;

    let bundle = env.path().join("bundle");
    let m = export_covered(&env, &bundle, mails.len() + files.len())?;
    let kinds: Vec<&str> = m["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"email") && kinds.contains(&"file"),
        "{kinds:?}"
    );
    assert_eq!(m["case"], "case-1 (leak)");
    assert_eq!(m["exporter"], "admin/boss");

    // The relayed message, byte for byte as the sink received it.
    let sunk: Vec<Vec<u8>> = upstream
        .messages()
        .into_iter()
        .map(|(raw, _)| raw)
        .collect();
    let mail_path = a_mail(&m)?;
    let exported = std::fs::read(bundle.join(&mail_path))?;
    assert!(
        sunk.contains(&exported),
        "{mail_path} is not a message the sink received"
    );

    // Who looked and who exported.
    let audit = std::fs::read_to_string(bundle.join("audit/entries.jsonl"))?;
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"GetRaw\"") && l.contains(&looked_at)),
        "{audit}"
    );
    assert!(
        audit.contains("\"ExportCase\"") && audit.contains("admin/boss"),
        "{audit}"
    );

    // Checked by kiroku.
    let o = verify_bundle(&env, &bundle)?;
    eprintln!("verify-bundle: {}", text(&o));
    assert!(o.status.success(), "verify-bundle: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("BUNDLE INTACT"),
        "{}",
        text(&o)
    );

    // Checked by standard tools alone.
    let tmpd = env.path().join("openssl-tmp");
    std::fs::create_dir_all(&tmpd)?;
    let ca = env.pki().join("ca.pem");
    let openssl = |dir: &Path| {
        run(Command::new("bash")
            .arg("-c")
            .arg(OPENSSL_CHECK)
            .env("CA", &ca)
            .env("TMPD", &tmpd)
            .current_dir(dir))
    };
    let o = openssl(&bundle)?;
    assert!(o.status.success(), "openssl: {}", text(&o));
    let o = sh(&bundle, SUMS_CHECK)?;
    assert!(o.status.success(), "sha256sum: {}", text(&o));
    let o = sh(&bundle, EXTRA_CHECK)?;
    assert!(
        o.status.success() && o.stdout.is_empty(),
        "extra files: {}",
        text(&o)
    );
    checkpoint_openssl(&bundle, &m, &ca, &tmpd)?;

    // Altered copies.
    type Change = fn(&Path, &str) -> anyhow::Result<()>;
    let cases: [(&str, Change, bool); 4] = [
        ("byte", |d, p| edit(d, p, |b| b[0] ^= 0x20), false),
        (
            "truncated",
            |d, p| edit(d, p, |b| b.truncate(b.len() / 2)),
            false,
        ),
        (
            "padded",
            |d, p| edit(d, p, |b| b.extend_from_slice(b"\r\n")),
            false,
        ),
        (
            "manifest-edited-to-match",
            |d, p| {
                edit(d, p, |b| b[0] ^= 0x20)?;
                relist(d, p)
            },
            true,
        ),
    ];
    for (what, change, sums_pass) in cases {
        let dir = env.path().join(format!("altered-{what}"));
        copy_dir(&bundle, &dir)?;
        change(&dir, &mail_path)?;
        let o = verify_bundle(&env, &dir)?;
        eprintln!("{what}: {}", text(&o));
        assert_eq!(o.status.code(), Some(3), "{what}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let want = if sums_pass {
            "BAD_SIGNATURE: manifest.sig"
        } else {
            "ALTERED: "
        };
        assert!(out.contains(want), "{what}: want {want}: {}", text(&o));
        let o = sh(&dir, SUMS_CHECK)?;
        assert_eq!(
            o.status.success(),
            sums_pass,
            "{what}: sha256sum: {}",
            text(&o)
        );
        if sums_pass {
            let o = openssl(&dir)?;
            assert!(
                !o.status.success(),
                "{what}: openssl accepted it: {}",
                text(&o)
            );
        }
    }
    // A file slipped in is found by both.
    let dir = env.path().join("altered-extra");
    copy_dir(&bundle, &dir)?;
    std::fs::write(dir.join("mail/planted.eml"), b"Subject: planted\r\n\r\n")?;
    let o = verify_bundle(&env, &dir)?;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("EXTRA: mail/planted.eml"),
        "{}",
        text(&o)
    );
    let o = sh(&dir, EXTRA_CHECK)?;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "mail/planted.eml",
        "{}",
        text(&o)
    );

    // A non-empty directory is refused, and nothing is written into it.
    let o = admin_cli(
        &env,
        &[
            "export",
            "--case",
            "x",
            "--agent",
            AGENT,
            "--out",
            dir.to_str().unwrap_or_default(),
        ],
    )?;
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not empty"),
        "{}",
        text(&o)
    );
    // Investigators may not export.
    let refused = env.cli(&[
        "export", "--case", "x", "--agent", AGENT, "--out", "inv-out",
    ]);
    let e = refused.expect_err("an investigator exported");
    assert!(e.to_string().contains("admins only"), "{e}");
    assert!(!env.path().join("inv-out").exists());
    Ok(())
}

/// One checkpoint of the bundle checked with openssl alone, as the README
/// shows.
fn checkpoint_openssl(
    bundle: &Path,
    m: &serde_json::Value,
    ca: &Path,
    tmpd: &Path,
) -> anyhow::Result<()> {
    let n = m["checkpoints"][0]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no checkpoint: {m}"))?;
    let base = format!("checkpoints/{n:020}");
    let script = format!(
        "set -e
openssl x509 -inform DER -in {base}.der -out \"$TMPD/cp.pem\"
openssl verify -CAfile \"$CA\" \"$TMPD/cp.pem\"
openssl x509 -in \"$TMPD/cp.pem\" -noout -pubkey > \"$TMPD/cp.pub\"
openssl dgst -sha256 -verify \"$TMPD/cp.pub\" -signature {base}.sig {base}.bin"
    );
    let o = run(Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("CA", ca)
        .env("TMPD", tmpd)
        .current_dir(bundle))?;
    anyhow::ensure!(
        o.status.success(),
        "checkpoint {n} with openssl: {}",
        text(&o)
    );
    Ok(())
}

fn edit(dir: &Path, path: &str, f: impl FnOnce(&mut Vec<u8>)) -> anyhow::Result<()> {
    let p: PathBuf = dir.join(path);
    let mut data = std::fs::read(&p)?;
    f(&mut data);
    std::fs::write(p, data)?;
    Ok(())
}

fn wait_watching(agent: &Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !agent.log_text().contains("file capture watching") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent never started watching:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
