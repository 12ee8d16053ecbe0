//! The CLI in the investigator's time zone and safe on their terminal,
//! against a real collector and agent: times printed with the zone's
//! offset (`--tz`, the config's `timezone`, `TZ`), `--from`/`--to` dates
//! at the zone's midnight, `--json` in UTC, the agent's time zone in the
//! host identity, the exfiltration report's days, filters and `--top`,
//! and a mail whose subject and attachment name carry escape sequences,
//! BEL, CR/LF and bidi overrides printed with none of them raw.

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use kiroku_proto::{Event, ListHostsRequest, SearchRequest};
use kiroku_tests::{Env, Mode, Upstream, bin, email, free_port, send_mail};

/// What a hostile sender puts in a subject: clear the screen, ring the
/// bell, end the line and forge the detail view's `outcome` line, reverse
/// the rest of the line.
const EVIL_SUBJECT: &str =
    "Invoice \u{1b}[2J\u{1b}[H\u{7}\r\n         outcome: rejected \u{202e}fdp.exe\u{2066}";

/// The raw bytes no printed (non-JSON) output may contain.
const RAW: [char; 9] = [
    '\u{1b}', '\u{7}', '\r', '\u{202e}', '\u{202a}', '\u{2066}', '\u{2069}', '\u{9b}', '\u{7f}',
];

fn plain_mail() -> Vec<u8> {
    b"From: alice-tz@example.com\r\n\
To: bob@example.org\r\n\
Subject: Local time check\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
The plan.\r\n\
--b\r\n\
Content-Type: application/pdf\r\n\
Content-Disposition: attachment; filename=\"plan.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKcGxhbg==\r\n\
--b--\r\n"
        .to_vec()
}

/// The subject as an encoded word (which can carry any byte) and an RFC
/// 2231 attachment name with ESC, BEL, CR/LF and a right-to-left override.
fn hostile_mail() -> Vec<u8> {
    let subject = base64::engine::general_purpose::STANDARD.encode(EVIL_SUBJECT);
    format!(
        "From: mallory-tz@example.com\r\n\
To: bob@example.org\r\n\
Subject: =?UTF-8?B?{subject}?=\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
Pay now.\r\n\
--b\r\n\
Content-Type: application/octet-stream\r\n\
Content-Disposition: attachment; filename*=UTF-8''evil%1B%5B31m%07%0D%0A%20%20%20%20%20%20%20%20%20outcome%3A%20rejected%E2%80%AEfdp.exe\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
TVqQAAMAAAAEAAAA\r\n\
--b--\r\n"
    )
    .into_bytes()
}

/// `ms` as `YYYY-MM-DD HH:MM:SS.mmm +HH:00` at a whole-hour offset east of
/// UTC, computed without the CLI's code: UTC RFC 3339 of the shifted time.
fn at_offset(ms: i64, hours: i64) -> String {
    let utc = kiroku_common::rfc3339_ms(ms + hours * 3_600_000);
    let sign = if hours < 0 { '-' } else { '+' };
    format!(
        "{} {} {sign}{:02}:00",
        &utc[..10],
        &utc[11..23],
        hours.abs()
    )
}

/// The calendar date of `ms` at `hours` from UTC, and the day after.
fn dates_at(ms: i64, hours: i64) -> (String, String) {
    let day = |ms: i64| kiroku_common::rfc3339_ms(ms)[..10].to_owned();
    let local = ms + hours * 3_600_000;
    (day(local), day(local + 86_400_000))
}

/// Runs the CLI with extra environment variables; returns stdout and
/// stderr, fails with stderr.
fn kiroku_env(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<(String, String)> {
    let out = Command::new(bin("kiroku"))
        .args(args)
        .envs(vars.iter().copied())
        .env_remove("KIROKU_CLI_CONFIG")
        .current_dir(env.path())
        .output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    anyhow::ensure!(out.status.success(), "kiroku {args:?} failed: {stderr}");
    Ok((stdout, stderr))
}

fn assert_inert(what: &str, out: &str) {
    for c in RAW {
        assert!(!out.contains(c), "{what}: raw {c:?} printed:\n{out}");
    }
    // Only the real outcome starts a line of the detail view.
    for l in out.lines() {
        assert!(
            !l.trim_start().starts_with("outcome: rejected"),
            "{what}: forged line {l:?}"
        );
    }
}

fn sender(e: &Event) -> &str {
    &email(e).mail_from
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_speaks_local_time_and_prints_outside_text_inert() -> anyhow::Result<()> {
    let env = Env::new()?;
    let _collector = env.start_collector()?;
    let upstream = Upstream::start(&env)?;
    let smtp = free_port();
    // The agent's host is in Tokyo: its identity says so.
    let _agent = env.start_agent_env(
        "pc-tz",
        smtp,
        &Mode::Relay(upstream.port),
        &[("TZ", "Asia/Tokyo")],
    )?;
    for (from, raw) in [
        ("alice-tz@example.com", plain_mail()),
        ("mallory-tz@example.com", hostile_mail()),
    ] {
        let sent = send_mail(smtp, from, &["bob@example.org"], &raw)?;
        assert_eq!(sent.code, 250, "{sent:?}");
    }
    let events = env
        .wait_for(
            SearchRequest {
                agent_id: "pc-tz".into(),
                kind: "email".into(),
                ..Default::default()
            },
            2,
            Duration::from_secs(30),
        )
        .await?;
    let plain = events
        .iter()
        .find(|e| sender(e) == "alice-tz@example.com")
        .expect("the plain mail");
    let hostile = events
        .iter()
        .find(|e| sender(e) == "mallory-tz@example.com")
        .expect("the hostile mail");
    // The record keeps the hostile text exactly, or this test tests nothing.
    let m = email(hostile);
    for c in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(m.subject.contains(c), "subject {:?} lost {c:?}", m.subject);
        assert!(
            m.attachments.iter().any(|a| a.filename.contains(c)),
            "attachment names {:?} lost {c:?}",
            m.attachments
        );
    }
    assert!(m.subject.contains(['\r', '\n']), "{:?}", m.subject);
    let cli = env.path().join("kiroku-cli.toml");
    env.cli(&["hosts"])?; // writes kiroku-cli.toml
    let cfg = cli.to_string_lossy().into_owned();
    let t = plain.observed_at_ms;

    // --tz: times at +09:00, the plain mail at its exact local time.
    let out = env.cli(&["--tz", "Asia/Tokyo", "search", "--agent", "pc-tz"])?;
    assert!(out.contains(&at_offset(t, 9)), "{}\n{out}", at_offset(t, 9));
    assert_inert("search --tz", &out);
    // The config's timezone, then TZ, when there is no --tz.
    let kolkata = env.path().join("kolkata.toml");
    std::fs::write(
        &kolkata,
        std::fs::read_to_string(&cli)?.replacen("[tls]", "timezone = \"Asia/Kolkata\"\n[tls]", 1),
    )?;
    let kolkata = kolkata.to_string_lossy().into_owned();
    let (out, _) = kiroku_env(
        &env,
        &["--config", &kolkata, "search", "--agent", "pc-tz"],
        &[("TZ", "America/New_York")],
    )?;
    assert!(out.contains(" +05:30"), "config timezone:\n{out}");
    let (out, _) = kiroku_env(
        &env,
        &["--config", &cfg, "search", "--agent", "pc-tz"],
        &[("TZ", "Etc/GMT+3")],
    )?;
    assert!(out.contains(&at_offset(t, -3)), "TZ:\n{out}");
    let err = env
        .cli(&["--tz", "Asia/Tokio", "search"])
        .expect_err("an unknown zone");
    assert!(
        err.to_string()
            .contains("--tz: unknown time zone \"Asia/Tokio\""),
        "{err}"
    );

    // --from/--to dates are midnight in the zone. The zone is chosen so
    // that the mail's local time is at least an hour from where reading
    // the dates as UTC midnights would give another answer.
    let utc_hour = (t.rem_euclid(86_400_000) / 3_600_000) as i64;
    let hours: i64 = if utc_hour >= 11 { 14 } else { -12 };
    // Etc/GMT-14 is UTC+14 (POSIX signs are inverted in these names).
    let zone = format!("Etc/GMT{:+}", -hours);
    let (day, next) = dates_at(t, hours);
    // (range, is the plain mail in it)
    for (range, want) in [
        (["--from", day.as_str()], true),
        (["--from", next.as_str()], false),
        (["--to", day.as_str()], false),
        (["--to", next.as_str()], true),
    ] {
        let mut args = vec![
            "--tz",
            zone.as_str(),
            "search",
            "--sender",
            "alice-tz@example.com",
            "--json",
        ];
        args.extend(range);
        let found = env.cli(&args)?.lines().count();
        assert_eq!(
            found == 1,
            want,
            "{args:?} (mail at {})",
            at_offset(t, hours)
        );
    }

    // --json stays exact and in UTC whatever the zone.
    let out = env.cli(&["--tz", "Asia/Tokyo", "search", "--agent", "pc-tz", "--json"])?;
    assert!(!out.contains("+09:00"), "{out}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(lines.iter().any(|v| v["observed_at_ms"] == t), "{out}");
    assert!(
        lines.iter().any(|v| v["email"]["subject"] == EVIL_SUBJECT),
        "JSON keeps the subject exact: {out}"
    );

    // The host's time zone, recorded by the agent and shown.
    let hosts = env
        .investigator()
        .await?
        .list_hosts(ListHostsRequest::default())
        .await?
        .into_inner()
        .hosts;
    let host = hosts.iter().find(|h| h.agent_id == "pc-tz").expect("pc-tz");
    assert_eq!(
        host.host.as_ref().map(|h| h.time_zone.as_str()),
        Some("Asia/Tokyo")
    );
    assert!(env.cli(&["hosts"])?.contains("Asia/Tokyo"));

    // The hostile mail, shown and listed: visible escapes, nothing raw.
    let out = env.cli(&["--tz", "Asia/Tokyo", "show", &hostile.event_id])?;
    assert_inert("show", &out);
    assert!(
        out.contains("\\u{1b}[2J") && out.contains("\\u{202e}"),
        "{out}"
    );
    assert!(out.contains("         outcome: delivered"), "{out}");
    assert!(out.contains("       time zone: Asia/Tokyo"), "{out}");
    let out = env.cli(&["search", "--sender", "mallory-tz@example.com"])?;
    assert_inert("search", &out);
    assert!(out.contains("\\u{1b}"), "{out}");
    let out = env.cli(&["trace", &m.attachments[0].sha256])?;
    assert_inert("trace", &out);

    // The exfiltration report: days and times in the zone, filters, top.
    let report = |args: &[&str]| -> anyhow::Result<String> {
        let mut all = vec!["--tz", "Asia/Tokyo", "report", "exfil", "--from", "1d"];
        all.extend_from_slice(args);
        env.cli(&all)
    };
    let out = report(&[])?;
    assert_inert("report exfil", &out);
    assert!(out.contains("(days in Asia/Tokyo)"), "{out}");
    // The report's times are corrected by the agent's measured clock offset.
    let corrected = if plain.clock_offset_known {
        t - plain.clock_offset_ms
    } else {
        plain.received_at_ms
    };
    assert!(out.contains(&at_offset(corrected, 9)), "{out}");
    let (tokyo_day, _) = dates_at(corrected, 9);
    assert!(out.contains(&format!("{tokyo_day}  mail")), "{out}");
    // (filters, the files note)
    // The report's user: the desktop account behind the client, else the
    // sender.
    let (user, user_files) = match (plain.user.as_str(), hostile.user.as_str()) {
        ("", _) => ("alice-tz@example.com".to_owned(), "1 file"),
        (a, b) if a == b => (a.to_owned(), "2 files"),
        (a, _) => (a.to_owned(), "1 file"),
    };
    for (args, note) in [
        (vec![], "2 files"),
        (vec!["--method", "mail"], "2 files"),
        (vec!["--method", "removable"], "0 files"),
        (vec!["--host", "pc-tz"], "2 files"),
        (vec!["--host", "no-such-host"], "0 files"),
        (vec!["--user", user.as_str()], user_files),
        (vec!["--user", "nobody-here"], "0 files"),
        (
            vec!["--max-files", "1"],
            "2 files; the newest 1 is listed, 1 earlier one is not",
        ),
    ] {
        let out = report(&args)?;
        assert!(out.contains(note), "{args:?}: {note}\n{out}");
    }
    let out = report(&["--top", "1"])?;
    assert!(out.contains("top 1 of "), "{out}");
    let err = report(&["--utc-offset", "+09:00"]).expect_err("two ways to cut days");
    assert!(err.to_string().contains("--tz and --utc-offset"), "{err}");
    // Without --tz, --utc-offset still cuts at its fixed offset.
    let out = env.cli(&["report", "exfil", "--from", "1d", "--utc-offset", "+09:00"])?;
    assert!(out.contains("(days in UTC+09:00)"), "{out}");
    assert!(out.contains(&format!("{tokyo_day}  mail")), "{out}");
    Ok(())
}
