//! Fault injection, quick mode (the soak mode is `scripts/reliability.sh
//! --soak-minutes N`): `kill -9` of the agent and of the collector at
//! random points, 20 times each, and network faults between them, while
//! mail flows through the relay. Every mail that got a 250 is stored
//! exactly once with the right content, and the stores open cleanly.

use kiroku_tests::Env;
use kiroku_tests::reliability::{self, Row};

fn report(row: &Row) {
    eprintln!("{}\n{}", Row::markdown_header(), row.markdown());
    assert!(!row.sent.eq(&0), "no mail was accepted at all: {row:?}");
    assert!(row.ok(), "{row:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_killed_20_times_under_load_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    report(&reliability::agent_crashes(&env, 20).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_killed_20_times_under_load_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    report(&reliability::collector_crashes(&env, 20).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn network_faults_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    report(&reliability::network_faults(&env, 3).await?);
    Ok(())
}
