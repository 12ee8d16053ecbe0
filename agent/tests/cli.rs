//! The agent binary refuses bad configuration with messages that name the
//! file and the field. (Also makes `cargo test --workspace` build the
//! binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiroku-agent"))
        .args(args)
        .output()
        .expect("run kiroku-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let (code, _, err) = agent(&["--config", missing.to_str().unwrap_or_default()]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.toml"), "{err}");

    let base = "data_dir = \"d\"\n[collector]\nendpoint = \"https://127.0.0.1:7443\"\n[collector.tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n";
    let cases = [
        (format!("{base}[smtp]\nmode = \"relay\"\n"), "smtp.upstream"),
        (
            format!("{base}[smtp]\nlisten = [\"127.0.0.1:2525\"]\nlisten_typo = 1\n"),
            "listen_typo",
        ),
        (format!("{base}[smtp]\nmode = \"teleport\"\n"), "teleport"),
    ];
    for (text, needle) in cases {
        let p = dir.path().join("agent.toml");
        std::fs::write(&p, &text).expect("write");
        let (code, _, err) = agent(&["--config", p.to_str().unwrap_or_default()]);
        assert_eq!(code, 2, "{text}");
        assert!(
            err.contains("agent.toml") && err.contains(needle),
            "{needle}: {err}"
        );
    }
    let p = dir.path().join("ok.toml");
    std::fs::write(&p, base).expect("write");
    let (code, out, err) = agent(&["--config", p.to_str().unwrap_or_default(), "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"));
}

#[test]
fn missing_certificate_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("agent.toml");
    std::fs::write(
        &p,
        "data_dir = \"d\"\n[collector]\nendpoint = \"https://127.0.0.1:7443\"\n[collector.tls]\nca = \"ca.pem\"\ncert = \"nope.pem\"\nkey = \"nope.key\"\n",
    )
    .expect("write");
    let (code, _, err) = agent(&["--config", p.to_str().unwrap_or_default()]);
    assert_eq!(code, 1);
    assert!(err.contains("nope.pem"), "{err}");
}
