//! What the table writes instead of one record per flow: summaries beyond
//! `coalesce_after` (long coalesced flows adding their deltas), and the gap
//! records for a full table and for lost notifications and packets.

use super::*;

#[test]
fn beyond_coalesce_after_short_flows_become_one_summary() {
    let cfg = NetworkConfig {
        coalesce_after: 2,
        ..cfg()
    };
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    let shorts: Vec<Socket> = (0..5)
        .map(|i| {
            tcp(
                100 + i,
                0,
                &format!("10.0.0.5:{}", 41000 + i),
                Some(SERVER),
                "close",
                100,
                10,
            )
        })
        .collect();
    t.closed(shorts, &mut p, 1_000, &mut out);
    // Not inferred (nobody seen with SERVER): recorded after the next
    // dump, or at the stop.
    assert!(out.is_empty());
    t.finish(&mut p, &mut out);
    // A long coalesced flow (the third seen in a dump) adds its deltas.
    assert_eq!(nets(&out).len(), 2);
    t.tick(59_000, false, &mut out);
    assert_eq!(nets(&out).len(), 2);
    t.tick(60_000, false, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 3);
    let s = ev[2];
    assert_eq!(s.phase, "summary");
    assert_eq!(
        (s.connections, s.bytes_out, s.bytes_in, s.bytes_out_delta),
        (3, 300, 30, 300)
    );
    assert_eq!((s.remote_ip.as_str(), s.remote_port), ("192.0.2.7", 443));
    assert_eq!(t.stats.coalesced, 3);
}

#[test]
fn coalesced_long_flows_add_their_deltas_to_summaries() {
    let cfg = NetworkConfig {
        coalesce_after: 0,
        ..cfg()
    };
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 100, 0)],
        &mut p,
        1_000,
        &mut out,
    );
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 250, 0)],
        &mut p,
        2_000,
        &mut out,
    );
    t.tick(60_000, false, &mut out);
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 400, 0)],
        &mut p,
        61_000,
        &mut out,
    );
    t.closed(
        vec![tcp(1, 0, CLIENT, Some(SERVER), "close", 1_000, 0)],
        &mut p,
        62_000,
        &mut out,
    );
    t.tick(62_500, true, &mut out);
    let ev = nets(&out);
    let s: Vec<(u64, u64)> = ev
        .iter()
        .map(|e| (e.connections, e.bytes_out_delta))
        .collect();
    assert!(ev.iter().all(|e| e.phase == "summary"));
    assert_eq!(s, [(1, 250), (0, 750)]);
}

/// Review 1 of issue 21: a coalesced flow open across a restart used to be
/// counted again from zero, its first run's bytes in two summaries.
#[test]
fn a_restarted_agent_continues_coalesced_flows_from_the_summaries_written() {
    let cfg = NetworkConfig {
        coalesce_after: 0,
        ..cfg()
    };
    let mut state = HashMap::new();
    let mut p = procs();
    let mut out = Vec::new();
    let other = "10.0.0.5:40003";
    let mut written = Vec::new();
    {
        let mut t = table(&cfg, HashMap::new());
        t.dump(
            vec![
                tcp(1, 11, CLIENT, Some(SERVER), "established", 100, 0),
                tcp(3, 11, other, Some(SERVER), "established", 5, 0),
            ],
            &mut p,
            1_000,
            &mut out,
        );
        t.dump(
            vec![
                tcp(1, 11, CLIENT, Some(SERVER), "established", 250, 0),
                tcp(3, 11, other, Some(SERVER), "established", 7, 0),
            ],
            &mut p,
            2_000,
            &mut out,
        );
        t.tick(60_000, false, &mut out);
        // Counted in the next summary, never written: killed before it.
        t.dump(
            vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 400, 0)],
            &mut p,
            61_000,
            &mut out,
        );
        apply_state(&out, &mut state);
        written.extend(nets(&out).into_iter().cloned());
    }
    assert_eq!(
        written
            .iter()
            .map(|e| (e.connections, e.bytes_out_delta))
            .collect::<Vec<_>>(),
        [(2, 257)]
    );
    let saved = &state["boot-0000000000000001"];
    assert!(saved.coalesced, "{saved:?}");
    assert_eq!(
        saved.totals.bytes_out, 250,
        "what the written summary counted"
    );

    out.clear();
    let mut t = table(&cfg, state.clone());
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 500, 0)],
        &mut p,
        70_000,
        &mut out,
    );
    t.closed(
        vec![tcp(1, 0, CLIENT, Some(SERVER), "close", 600, 0)],
        &mut p,
        71_000,
        &mut out,
    );
    t.tick(72_000, true, &mut out);
    apply_state(&out, &mut state);
    let ev = nets(&out);
    assert!(
        ev.iter().all(|e| e.phase == "summary"),
        "no open, update or close for a coalesced flow: {ev:#?}"
    );
    assert_eq!(
        ev.iter()
            .map(|e| (e.connections, e.bytes_out_delta))
            .collect::<Vec<_>>(),
        [(0, 350)],
        "only what came after the written summary, and not a new connection"
    );
    assert!(
        state.is_empty(),
        "the closed flow and the one that ended while stopped are forgotten: {state:?}"
    );
}

#[test]
fn over_max_flows_new_flows_are_counted_in_a_gap_record() {
    let cfg = NetworkConfig {
        max_flows: 2,
        ..cfg()
    };
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    let socks = |n: u64| -> Vec<Socket> {
        (1..=n)
            .map(|i| {
                tcp(
                    i,
                    11,
                    &format!("10.0.0.5:{}", 42000 + i),
                    Some(SERVER),
                    "established",
                    1,
                    1,
                )
            })
            .collect()
    };
    t.dump(socks(4), &mut p, 1_000, &mut out);
    // The same untracked sockets at the next dump are not counted again.
    t.dump(socks(5), &mut p, 2_000, &mut out);
    assert_eq!(nets(&out).len(), 2);
    t.tick(60_000, false, &mut out);
    let g = gaps(&out);
    assert_eq!(g.len(), 1);
    assert_eq!(
        (g[0].source.as_str(), g[0].reason.as_str(), g[0].count),
        ("network", "flow_table_full", 3)
    );
    assert_eq!((g[0].first_ms, g[0].last_ms), (1_000, 2_000));
    assert!(g[0].detail.contains("network.max_flows = 2"));
}

#[test]
fn lost_notifications_are_a_gap_record() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut out = Vec::new();
    t.lost(0, 1_000);
    t.tick(60_000, false, &mut out);
    assert!(out.is_empty());
    t.lost(17, 61_000);
    t.lost(3, 62_000);
    t.tick(119_000, false, &mut out);
    assert!(out.is_empty(), "one gap record per interval at most");
    t.tick(120_000, false, &mut out);
    let g = gaps(&out);
    assert_eq!(
        (g[0].reason.as_str(), g[0].count),
        ("notifications_lost", 20)
    );
}

#[test]
fn inspected_packets_dropped_are_a_gap_record() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut out = Vec::new();
    t.packets_lost(0, 1_000);
    t.tick(60_000, false, &mut out);
    assert!(out.is_empty());
    t.packets_lost(40, 61_000);
    t.packets_lost(2, 62_000);
    t.lost(5, 62_000);
    t.tick(120_000, false, &mut out);
    let g = gaps(&out);
    let got: Vec<(&str, &str, u64)> = g
        .iter()
        .map(|g| (g.source.as_str(), g.reason.as_str(), g.count))
        .collect();
    assert_eq!(
        got,
        [
            ("network", "notifications_lost", 5),
            ("network", "packets_lost", 42)
        ]
    );
    let p = g
        .iter()
        .find(|g| g.reason == "packets_lost")
        .expect("the gap");
    assert_eq!((p.first_ms, p.last_ms), (61_000, 62_000));
    assert_eq!(t.stats.packets_lost, 42);
}

/// A client's many connections to one service, each from its own
/// ephemeral port, are one key: beyond `coalesce_after` they become one
/// summary per client and local port (without a remote port), not a
/// record each. Another client keeps its own key.
#[test]
fn inbound_connections_are_coalesced_by_client_and_local_port() {
    let cfg = NetworkConfig {
        coalesce_after: 2,
        ..cfg()
    };
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    let listener = tcp(1, 12, "0.0.0.0:8080", None, "listen", 0, 0);
    let conn = |cookie: u64, client: &str| {
        tcp(
            cookie,
            12,
            "10.0.0.5:8080",
            Some(client),
            "established",
            100,
            1000,
        )
    };
    let mut sockets = vec![listener];
    sockets.extend((0..6).map(|i| conn(10 + i, &format!("192.0.2.9:{}", 50000 + i))));
    sockets.push(conn(30, "192.0.2.10:50000"));
    t.dump(sockets, &mut p, 1_000, &mut out);
    let ev = nets(&out);
    let opens: Vec<_> = ev.iter().filter(|e| e.phase == "open").collect();
    assert!(opens.iter().all(|e| e.direction == "inbound"), "{opens:#?}");
    assert_eq!(
        opens.iter().filter(|e| e.remote_ip == "192.0.2.9").count(),
        2,
        "two records of their own, the rest summarised: {opens:#?}"
    );
    assert_eq!(
        opens.iter().filter(|e| e.remote_ip == "192.0.2.10").count(),
        1,
        "another client has its own key"
    );
    assert_eq!(t.stats.coalesced, 4);
    out.clear();
    t.tick(60_000, false, &mut out);
    let ev = nets(&out);
    let s: Vec<_> = ev.iter().filter(|e| e.phase == "summary").collect();
    assert_eq!(s.len(), 1, "{ev:#?}");
    assert_eq!(
        (
            s[0].remote_ip.as_str(),
            s[0].remote_port,
            s[0].local_port,
            s[0].connections
        ),
        ("192.0.2.9", 0, 8080, 4)
    );
}
