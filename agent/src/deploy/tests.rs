use super::*;

fn setting(property: &str) -> Setting {
    *SETTINGS
        .iter()
        .find(|s| s.property == property)
        .unwrap_or_else(|| panic!("no setting {property}"))
}

fn given(pairs: &[(&str, &str)]) -> Vec<(Setting, String)> {
    pairs
        .iter()
        .map(|(p, v)| (setting(p), (*v).to_owned()))
        .collect()
}

fn full() -> Vec<(Setting, String)> {
    given(&[
        ("COLLECTOR", "https://collector.example.co.jp:7443"),
        ("CA_FILE", "/etc/kiroku/ca.pem"),
        ("CERT_FILE", "/etc/kiroku/pc-0001.pem"),
        ("KEY_FILE", "/etc/kiroku/pc-0001.key"),
        ("SMTP_LISTEN", "127.0.0.1:2525, 127.0.0.1:587"),
        ("SMTP_UPSTREAM", "smtp.example.co.jp:587"),
    ])
}

#[test]
fn flags_properties_and_keys_line_up() {
    // The clap struct and SETTINGS must agree: every flag parses into the
    // setting of the same name, in the same order.
    let mut args = vec!["x".to_owned(), "--config".to_owned(), "c.toml".to_owned()];
    for s in SETTINGS {
        args.push(s.flag());
        args.push(format!("v-{}", s.property));
    }
    let parsed = WriteArgs::parse_from(args);
    let got: Vec<(&str, String)> = parsed
        .given()
        .into_iter()
        .map(|(s, v)| (s.property, v))
        .collect();
    let want: Vec<(&str, String)> = SETTINGS
        .iter()
        .map(|s| (s.property, format!("v-{}", s.property)))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn empty_values_are_not_given() {
    let parsed = WriteArgs::parse_from([
        "x",
        "--config",
        "c.toml",
        "--collector",
        "",
        "--smtp-upstream",
        "  ",
        "--ca-file",
        "ca.pem",
    ]);
    let got: Vec<&str> = parsed.given().iter().map(|(s, _)| s.property).collect();
    assert_eq!(got, ["CA_FILE"]);
}

#[test]
fn values_by_kind() {
    let cases: &[(&str, &str, toml::Value)] = &[
        ("COLLECTOR", " https://c:7443 ", "https://c:7443".into()),
        (
            "SMTP_LISTEN",
            "127.0.0.1:2525,[::1]:2525; 127.0.0.1:587",
            toml::Value::Array(vec![
                "127.0.0.1:2525".into(),
                "[::1]:2525".into(),
                "127.0.0.1:587".into(),
            ]),
        ),
        (
            "FILES_WATCH",
            r"C:\Users;D:\Share, Sales Dept;",
            toml::Value::Array(vec![r"C:\Users".into(), r"D:\Share, Sales Dept".into()]),
        ),
    ];
    for (property, text, want) in cases {
        assert_eq!(&setting(property).value(text), want, "{property} {text:?}");
    }
}

#[test]
fn creates_a_valid_file_with_defaults_next_to_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("Kiroku").join("agent.toml");
    assert_eq!(write(&path, &full())?, Outcome::Created);
    let text = std::fs::read_to_string(&path)?;
    assert!(text.starts_with("# kiroku-agent configuration"), "{text}");
    let cfg = AgentConfig::parse(&path, &text)?;
    assert_eq!(
        cfg.collector.endpoint,
        "https://collector.example.co.jp:7443"
    );
    assert_eq!(cfg.collector.tls.cert, Path::new("/etc/kiroku/pc-0001.pem"));
    assert_eq!(cfg.smtp.mode, crate::config::SmtpMode::Relay);
    assert_eq!(cfg.smtp.listen.len(), 2);
    assert_eq!(cfg.smtp.upstream.as_deref(), Some("smtp.example.co.jp:587"));
    assert_eq!(cfg.data_dir, dir.path().join("Kiroku").join("agent"));
    assert!(!dir.path().join("Kiroku").join("agent.toml.new").exists());
    Ok(())
}

#[test]
fn defaults_fill_what_is_not_given() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    let only = given(&[("COLLECTOR", "https://c:7443"), ("SMTP_UPSTREAM", "mx:25")]);
    write(&path, &only)?;
    let cfg = AgentConfig::parse(&path, &std::fs::read_to_string(&path)?)?;
    assert_eq!(
        cfg.collector.tls.ca,
        dir.path().join("certs").join("ca.pem")
    );
    assert_eq!(
        cfg.collector.tls.key,
        dir.path().join("certs").join("agent.key")
    );
    assert_eq!(cfg.smtp.listen, vec!["127.0.0.1:2525".parse()?]);
    Ok(())
}

#[test]
fn an_upgrade_without_settings_keeps_the_file_byte_for_byte() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    write(&path, &full())?;
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str("\n# an administrator's note\n[custom]\nsite = \"tokyo\"\n");
    std::fs::write(&path, &text)?;
    for again in [Vec::new(), full()] {
        assert_eq!(write(&path, &again)?, Outcome::Unchanged);
        assert_eq!(std::fs::read_to_string(&path)?, text);
    }
    Ok(())
}

#[test]
fn a_changed_setting_updates_only_its_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    write(&path, &full())?;
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str("\n[custom]\nsite = \"tokyo\"\n");
    std::fs::write(&path, &text)?;
    let change = given(&[("COLLECTOR", "https://new.example:7443")]);
    assert_eq!(write(&path, &change)?, Outcome::Updated);
    let cfg = AgentConfig::parse(&path, &std::fs::read_to_string(&path)?)?;
    assert_eq!(cfg.collector.endpoint, "https://new.example:7443");
    assert_eq!(cfg.custom.get("site").map(String::as_str), Some("tokyo"));
    assert_eq!(cfg.smtp.upstream.as_deref(), Some("smtp.example.co.jp:587"));
    Ok(())
}

#[test]
fn an_invalid_result_is_refused_and_names_the_setting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    // A first install without the mail server: relay mode needs it.
    let err = write(&path, &given(&[("COLLECTOR", "https://c:7443")])).expect_err("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("smtp.upstream"), "{msg}");
    assert!(msg.contains("SMTP_UPSTREAM (smtp.upstream)"), "{msg}");
    assert!(!path.exists());
    // A first install without the collector.
    let err = write(&path, &given(&[("SMTP_UPSTREAM", "mx:25")])).expect_err("must fail");
    assert!(format!("{err:#}").contains("endpoint"), "{err:#}");
    // Capture-only has to be chosen.
    let capture = given(&[
        ("COLLECTOR", "https://c:7443"),
        ("SMTP_MODE", "capture-only"),
    ]);
    assert_eq!(write(&path, &capture)?, Outcome::Created);
    std::fs::remove_file(&path)?;
    // A bad value in an existing file's update leaves the file alone.
    write(&path, &full())?;
    let before = std::fs::read(&path)?;
    let bad = given(&[("SMTP_UPSTREAM_TLS", "sometimes")]);
    assert!(write(&path, &bad).is_err());
    assert_eq!(std::fs::read(&path)?, before);
    Ok(())
}

#[test]
fn a_broken_existing_file_is_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "data_dir = [")?;
    let err = write(&path, &full()).expect_err("must fail");
    assert!(
        format!("{err:#}").contains("agent.toml is not valid TOML"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn dispatch_only_takes_config_write() {
    let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    assert!(dispatch(&os(&["--config", "x.toml"])).is_none());
    assert!(dispatch(&os(&["config"])).is_none());
    assert!(dispatch(&os(&["service", "install"])).is_none());
}

#[test]
fn an_enrollment_token_needs_its_endpoint() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    let base = [
        ("COLLECTOR", "https://c:7443"),
        ("SMTP_UPSTREAM", "mx:25"),
        ("ENROLL_TOKEN", "kt1-0123456789abcdef"),
    ];
    let err = write(&path, &given(&base)).expect_err("must fail");
    assert!(format!("{err:#}").contains("enroll_endpoint"), "{err:#}");
    let mut all = base.to_vec();
    all.push(("ENROLL_ENDPOINT", "https://c:7444"));
    assert_eq!(write(&path, &given(&all))?, Outcome::Created);
    let cfg = AgentConfig::parse(&path, &std::fs::read_to_string(&path)?)?;
    assert_eq!(
        cfg.collector.enroll_token.as_deref(),
        Some("kt1-0123456789abcdef")
    );
    assert_eq!(
        cfg.collector.enroll_endpoint.as_deref(),
        Some("https://c:7444")
    );
    Ok(())
}
