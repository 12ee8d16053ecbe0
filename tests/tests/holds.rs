//! Legal holds end to end (issue 19): `kiroku hold create|list|release`
//! against a real collector, as an investigator and as an admin. Holds are
//! created by both, listed with the events each covers now (an event that
//! arrives later and matches counts too), released only by an admin (the
//! investigator's attempt refused with a clear message), and every
//! operation — the refused release too — is an admin entry in the audit
//! log with who, the case and the filter.
//!
//! Events are shipped through the real Ingest API with an agent
//! certificate (the holds do not care how they were captured).

use kiroku_proto::admin_client::AdminClient;
use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Batch, Event, FileEvent, Hello, HoldCreateRequest, SearchRequest, ShipRequest, event::Kind,
    ship_request, ship_response,
};
use kiroku_tests::Env;

fn file(seq: u64, user: &str) -> Event {
    Event {
        stream_id: "holds-e2e".into(),
        seq,
        observed_at_ms: kiroku_common::now_ms(),
        user: user.into(),
        kind: Some(Kind::File(FileEvent {
            operation: "create".into(),
            path: format!("/home/{user}/report-{seq}.xlsx"),
            size: 100,
            volume: "/".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Ships `events` as agent `pc-1`; returns how many were stored.
async fn ship(env: &Env, events: Vec<Event>) -> anyhow::Result<u32> {
    let pki = env.pki();
    let ch = env
        .channel(
            Some((&pki.join("agent-pc-1.pem"), &pki.join("agent-pc-1.key"))),
            None,
        )
        .await?;
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: "holds-e2e".into(),
                ..Default::default()
            })),
        },
        ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch {
                events,
                ..Default::default()
            })),
        },
    ];
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            return Ok(a.stored);
        }
    }
    anyhow::bail!("Ship ended without an Ack")
}

/// `kiroku hold list [--all] --json` as `cert`: (id, events, released_by).
fn list(env: &Env, cert: &str, all: bool) -> anyhow::Result<Vec<(String, u64, String)>> {
    let mut args = vec!["hold", "list", "--json"];
    if all {
        args.push("--all");
    }
    let (code, out, err) = env.cli_as(cert, &args)?;
    anyhow::ensure!(code == 0, "hold list as {cert}: {err}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok((
                v["id"].as_str().unwrap_or_default().to_owned(),
                v["events"].as_u64().unwrap_or_default(),
                v["released_by"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// The admin entries of the audit log about holds: (identity, call, detail).
fn hold_audit(env: &Env) -> anyhow::Result<Vec<(String, String, String)>> {
    let (code, out, err) = env.cli_as("admin-boss", &["audit", "--kind", "admin", "--json"])?;
    anyhow::ensure!(code == 0, "kiroku audit: {err}");
    let mut entries = Vec::new();
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        let call = v["call"].as_str().unwrap_or_default();
        if call.starts_with("Hold") {
            entries.push((
                v["identity"].as_str().unwrap_or_default().to_owned(),
                call.to_owned(),
                v["detail"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(entries)
}

#[tokio::test(flavor = "multi_thread")]
async fn holds_are_created_listed_and_released_by_admins_only_all_audited() -> anyhow::Result<()> {
    let env = Env::new()?;
    env.issue("agent", "pc-1", &[])?;
    let collector = env.start_collector()?;
    let events: Vec<Event> = (1..=5)
        .map(|i| file(i, if i <= 3 { "alice" } else { "bob" }))
        .collect();
    assert_eq!(ship(&env, events).await?, 5);

    // An investigator puts alice's events on hold.
    let (code, out, err) = env.cli_as(
        "investigator-inv",
        &[
            "hold",
            "create",
            "--case",
            "Acme v. Corp",
            "--reason",
            "litigation",
            "--user",
            "alice",
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("hold h-1 created for case Acme v. Corp: 3 events held now"),
        "{out}"
    );
    // An admin adds bob's to the same case.
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &[
            "hold",
            "create",
            "--case",
            "Acme v. Corp",
            "--reason",
            "bob too",
            "--user",
            "bob",
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hold h-2"), "{out}");
    // A hold must name what it holds: refused by the CLI and, asked
    // directly, by the collector (audited).
    let (code, _, err) = env.cli_as(
        "investigator-inv",
        &["hold", "create", "--case", "X", "--reason", "everything"],
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("at least one filter"), "{err}");
    let refused = AdminClient::new(env.admin().await?)
        .hold_create(HoldCreateRequest {
            case_name: "X".into(),
            reason: "everything".into(),
            filter: Some(SearchRequest {
                page_size: 10,
                ..Default::default()
            }),
        })
        .await
        .expect_err("a hold over every event");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    // A matching event that arrives later is covered too.
    assert_eq!(ship(&env, vec![file(6, "alice")]).await?, 1);
    assert_eq!(
        list(&env, "investigator-inv", false)?,
        [
            ("h-1".into(), 4, String::new()),
            ("h-2".into(), 2, String::new())
        ]
    );
    let (code, table, _) = env.cli_as("investigator-inv", &["hold", "list"])?;
    assert_eq!(code, 0);
    assert!(
        table.contains("Acme v. Corp") && table.contains(r#"{"user":"alice"}"#),
        "{table}"
    );

    // The investigator may not release; the refusal says who may.
    let (code, _, err) = env.cli_as(
        "investigator-inv",
        &["hold", "release", "h-1", "--reason", "no longer needed"],
    )?;
    assert_ne!(code, 0);
    assert!(
        err.contains("PermissionDenied") && err.contains("only an admin may"),
        "{err}"
    );
    assert_eq!(
        list(&env, "admin-boss", false)?.len(),
        2,
        "nothing released"
    );

    // The admin releases h-1 by id, then the rest of the case by name.
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &["hold", "release", "h-1", "--reason", "settled"],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("released h-1 of case Acme v. Corp"), "{out}");
    assert_eq!(
        list(&env, "investigator-inv", false)?,
        [("h-2".into(), 2, String::new())]
    );
    let (code, out, err) = env.cli_as(
        "admin-boss",
        &[
            "hold",
            "release",
            "--case",
            "Acme v. Corp",
            "--reason",
            "closed",
        ],
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("released h-2"), "{out}");
    assert!(list(&env, "investigator-inv", false)?.is_empty());
    assert_eq!(
        list(&env, "investigator-inv", true)?,
        [
            ("h-1".into(), 0, "admin/boss".into()),
            ("h-2".into(), 0, "admin/boss".into())
        ]
    );
    let (code, _, err) = env.cli_as(
        "admin-boss",
        &["hold", "release", "h-2", "--reason", "again"],
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("already released"), "{err}");

    // Every operation in the audit trail, in order, with who, case and
    // filter.
    let audit = hold_audit(&env)?;
    let calls: Vec<(&str, &str, bool)> = audit
        .iter()
        .map(|(who, call, d)| (who.as_str(), call.as_str(), d.starts_with("REFUSED")))
        .collect();
    assert_eq!(
        calls,
        [
            ("investigator/inv", "HoldCreate", false),
            ("admin/boss", "HoldCreate", false),
            ("admin/boss", "HoldCreate", true),
            ("investigator/inv", "HoldRelease", true),
            ("admin/boss", "HoldRelease", false),
            ("admin/boss", "HoldRelease", false),
            ("admin/boss", "HoldRelease", true),
        ],
        "{audit:#?}"
    );
    let created = &audit[0].2;
    assert!(
        created.contains("hold h-1")
            && created.contains("Acme v. Corp")
            && created.contains("litigation")
            && created.contains(r#"{"user":"alice"}"#)
            && created.contains("covers 3 events"),
        "{created}"
    );
    assert!(audit[3].2.contains("PermissionDenied"), "{}", audit[3].2);
    assert!(
        audit[4].2.contains("hold h-1") && audit[4].2.contains("settled"),
        "{}",
        audit[4].2
    );
    drop(collector);
    Ok(())
}
