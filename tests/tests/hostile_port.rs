//! Hostile bytes on the collector's gRPC port (the scenario is
//! `kiroku_tests::reliability::hostile_port`, also a row of the
//! reliability table): garbage, HTTP/1.1, HTTP/2 without TLS, ClientHello
//! and garbage, HTTP/1.1 / random bytes / garbage frames inside mTLS, and
//! connections that never finish, while agents ship. Each is closed, never
//! answered in plain text, logged with the peer address; nothing leaks and
//! every event of the agents is stored exactly once.

use kiroku_tests::Env;
use kiroku_tests::reliability::{Row, hostile_port};

#[tokio::test(flavor = "multi_thread")]
async fn hostile_bytes_on_the_grpc_port_are_refused_logged_and_leak_nothing() -> anyhow::Result<()>
{
    let env = Env::new()?;
    let row = hostile_port::run(&env, 200).await?;
    eprintln!("{}\n{}", Row::markdown_header(), row.markdown());
    assert!(row.sent > 0, "the agents shipped nothing: {row:?}");
    assert!(row.ok(), "{row:?}");
    Ok(())
}
