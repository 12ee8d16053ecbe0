//! Hand-made events shipped to the collector as an agent, through the real
//! gRPC Ingest API (`Ship`: Hello, one Batch, the Ack): for tests of what
//! the collector does with records whose capture is tested elsewhere
//! (issue 21: network and P2P records for search, stats, alerts and the
//! network report). The agent's certificate is issued on first use; its
//! name is the agent id the collector records.

use kiroku_proto::ingest_client::IngestClient;
use kiroku_proto::{
    Ack, Batch, Event, Hello, HostIdentity, RecordedEvent, ShipRequest, ship_request, ship_response,
};
use prost::Message;

use crate::Env;

/// Ships `events` as agent `agent` on stream `stream`, numbered from
/// `first_seq` (the collector stores a stream's events above its
/// high-water mark once), as the agent's buffer holds them (recorded
/// bytes), with `host` in the Hello and on every event that has none.
/// Returns the Ack (stored and duplicate counts) and the ids the collector
/// gives the events (`agent/stream/seq`).
pub async fn ship_as_agent(
    env: &Env,
    agent: &str,
    host: &str,
    stream: &str,
    first_seq: u64,
    mut events: Vec<Event>,
) -> anyhow::Result<(Ack, Vec<String>)> {
    let identity = HostIdentity {
        hostname: host.into(),
        ..Default::default()
    };
    let mut ids = Vec::with_capacity(events.len());
    for (i, e) in events.iter_mut().enumerate() {
        e.stream_id = stream.into();
        e.seq = first_seq + i as u64;
        if e.host.is_none() {
            e.host = Some(identity.clone());
        }
        ids.push(format!("{agent}/{stream}/{}", e.seq));
    }
    let recorded = events
        .iter()
        .map(|e| RecordedEvent {
            event: e.encode_to_vec(),
            raw_not_kept: String::new(),
        })
        .collect();
    let msgs = vec![
        ShipRequest {
            msg: Some(ship_request::Msg::Hello(Hello {
                stream_id: stream.into(),
                host: Some(identity),
                agent_version: "test".into(),
            })),
        },
        ShipRequest {
            msg: Some(ship_request::Msg::Batch(Batch {
                recorded,
                ..Default::default()
            })),
        },
    ];
    let (cert, key) = env.identity("agent", agent)?;
    let ch = env.channel(Some((&cert, &key)), None).await?;
    let mut resp = IngestClient::new(ch)
        .ship(tokio_stream::iter(msgs))
        .await?
        .into_inner();
    while let Some(m) = resp.message().await? {
        if let Some(ship_response::Msg::Ack(a)) = m.msg {
            return Ok((a, ids));
        }
    }
    anyhow::bail!("Ship ended without an Ack (agent {agent}, stream {stream})")
}
