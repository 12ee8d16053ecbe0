//! Fault injection, quick mode (the soak mode is `scripts/reliability.sh
//! --soak-minutes N`): `kill -9` of the agent and of the collector at
//! random points, 20 times each, and network faults between them, while
//! mail flows through the relay (and, in the kill scenarios, files are
//! written in a watched directory). Every mail that got a 250 and every
//! captured file is stored exactly once with the right content, and the
//! stores open cleanly.
//!
//! Overload: 1,000 agent streams with distinct certificates at once (fewer
//! events per stream than the soak, never fewer streams).

use kiroku_tests::Env;
use kiroku_tests::reliability::{self, Row};

fn report(row: &Row) {
    eprintln!("{}\n{}", Row::markdown_header(), row.markdown());
    assert!(!row.sent.eq(&0), "nothing was accepted at all: {row:?}");
    assert!(row.ok(), "{row:?}");
}

fn report_all(rows: &[Row]) {
    for row in rows {
        report(row);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_killed_20_times_under_load_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    report_all(&reliability::agent_crashes(&env, 20).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_killed_20_times_under_load_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    report_all(&reliability::collector_crashes(&env, 20).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn network_faults_lose_and_duplicate_nothing() -> anyhow::Result<()> {
    let env = Env::new()?;
    report(&reliability::network_faults(&env, 3).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn thousand_concurrent_agent_streams_store_everything_once_and_queries_answer()
-> anyhow::Result<()> {
    let env = Env::new()?;
    let load = reliability::many_agents::Load {
        agents: 1000,
        batches: 3,
        per_batch: 5,
    };
    report(&reliability::many_agents::run(&env, load).await?);
    Ok(())
}
