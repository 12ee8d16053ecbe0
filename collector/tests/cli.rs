//! The collector and `kiroku` binaries fail clearly on bad input. (Also
//! makes `cargo test --workspace` build the binaries that the end-to-end
//! tests in `tests/` run.)

use std::process::Command;

fn run(bin: &str, args: &[&str], cwd: &std::path::Path) -> (i32, String) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env_remove("KIROKU_CLI_CONFIG")
        .env_remove("KIROKU_COLLECTOR")
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn collector_config_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, err) = run(
        env!("CARGO_BIN_EXE_kiroku-collector"),
        &["--config", "nope.toml"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("nope.toml"), "{err}");
    std::fs::write(
        dir.path().join("c.toml"),
        "data_dir = \"d\"\nplaintext = true\n[tls]\nca=\"a\"\ncert=\"b\"\nkey=\"c\"\n",
    )
    .expect("write");
    let (code, err) = run(
        env!("CARGO_BIN_EXE_kiroku-collector"),
        &["--config", "c.toml"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(err.contains("c.toml") && err.contains("plaintext"), "{err}");
}

#[test]
fn certs_and_cli_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = env!("CARGO_BIN_EXE_kiroku");
    let (code, out) = run(k, &["certs", "init", "--dir", "pki"], dir.path());
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(k, &["certs", "init", "--dir", "pki"], dir.path());
    assert_eq!(code, 1);
    assert!(out.contains("already exists"), "{out}");
    let (code, out) = run(
        k,
        &[
            "certs", "issue", "--dir", "pki", "--role", "wizard", "--name", "x",
        ],
        dir.path(),
    );
    assert_ne!(code, 0);
    assert!(out.contains("wizard"), "{out}");
    let (code, out) = run(
        k,
        &[
            "certs", "issue", "--dir", "pki", "--role", "agent", "--name", "../x",
        ],
        dir.path(),
    );
    assert_eq!(code, 1);
    assert!(out.contains("invalid name"), "{out}");
    let (code, out) = run(k, &["search"], dir.path());
    assert_eq!(code, 1);
    assert!(out.contains("no collector given"), "{out}");
    let (code, out) = run(
        k,
        &[
            "search",
            "--collector",
            "https://127.0.0.1:1",
            "--from",
            "someday",
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
}
