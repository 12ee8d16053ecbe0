//! Whose a flow is: the first record waiting a little for its owner, and
//! sockets never seen in a dump, or whose owner /proc did not tell in time,
//! inferred (a listener's owner, the process seen with the peer) or
//! attributed to their uid.

use super::*;

#[test]
fn a_flow_never_seen_in_a_dump_is_inferred_or_attributed_to_its_uid() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    // wget (uid 65534) is seen talking to SERVER; nginx listens on 8080.
    let mut seen = tcp(1, 13, CLIENT, Some(SERVER), "established", 1, 1);
    seen.uid = 65534;
    t.dump(
        vec![seen, tcp(2, 12, "0.0.0.0:8080", None, "listen", 0, 0)],
        &mut p,
        1_000,
        &mut out,
    );
    out.clear();
    let other = "198.51.100.4:443";
    // Linux notifications of sockets never dumped: inode 0, uid unknown.
    let short = tcp(7, 0, "10.0.0.5:40007", Some(SERVER), "close", 500, 40);
    let nobody_knows = tcp(8, 0, "10.0.0.5:40008", Some(other), "close", 300, 30);
    let inbound = tcp(
        9,
        0,
        "10.0.0.5:8080",
        Some("203.0.113.8:50000"),
        "close",
        10,
        10,
    );
    // Dumped once (inode and uid known) but not tracked: uid 0 is not
    // wget's uid, so only the uid is told.
    let mut known_uid = tcp(10, 77, "10.0.0.5:40010", Some(SERVER), "close", 1, 1);
    known_uid.uid = 0;
    t.closed(
        vec![short, nobody_knows, inbound, known_uid],
        &mut p,
        1_400,
        &mut out,
    );
    // Those not inferred now wait for the next dump (here: the stop).
    assert_eq!(nets(&out).len(), 2);
    t.finish(&mut p, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 4);
    let (a, b, c, d) = (ev[0], ev[2], ev[1], ev[3]);
    assert_eq!(
        (a.phase.as_str(), a.attribution.as_str()),
        ("close", "inferred")
    );
    assert_eq!(a.process.as_ref().expect("test value").name, "wget");
    assert_eq!(
        (a.start_ms, a.end_ms, a.bytes_out_delta, a.bytes_out),
        (1_000, 1_400, 500, 500)
    );
    assert_eq!((b.attribution.as_str(), b.process.is_none()), ("", true));
    assert_eq!(
        (c.attribution.as_str(), c.direction.as_str()),
        ("inferred", "inbound")
    );
    assert_eq!(c.process.as_ref().expect("test value").name, "nginx");
    assert_eq!(d.attribution, "uid");
    let pr = d.process.as_ref().expect("test value");
    assert_eq!((pr.pid, pr.uid, pr.user.as_str()), (0, 0, "root"));
    // Nothing is kept for them: no state change.
    assert!(out.iter().all(|r| matches!(r, Rec::Net(_, None))));
}

#[test]
fn the_first_record_waits_for_the_owner_a_little() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    // The process table knows nothing yet (it rescans at most once a
    // second).
    let mut empty = Procs(HashMap::new());
    let mut p = procs();
    let mut out = Vec::new();
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 10, 0)],
        &mut empty,
        1_000,
        &mut out,
    );
    assert!(out.is_empty());
    t.dump(
        vec![tcp(1, 11, CLIENT, Some(SERVER), "established", 20, 0)],
        &mut p,
        1_200,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(
        (
            ev[0].phase.as_str(),
            ev[0].attribution.as_str(),
            ev[0].start_ms
        ),
        ("open", "socket", 1_000)
    );
    assert_eq!(
        (
            ev[0].process.as_ref().expect("test value").name.as_str(),
            ev[0].bytes_out_delta
        ),
        ("curl", 20)
    );
    // Never found: recorded with its uid once the wait is over (nobody
    // else talks to its peer: not inferred).
    out.clear();
    let s1 = || tcp(1, 11, CLIENT, Some(SERVER), "established", 20, 0);
    let s2 = || {
        tcp(
            2,
            55,
            "10.0.0.5:40002",
            Some("198.51.100.4:443"),
            "established",
            5,
            0,
        )
    };
    t.dump(vec![s1(), s2()], &mut empty, 2_000, &mut out);
    t.dump(vec![s1(), s2()], &mut empty, 3_000, &mut out);
    assert!(out.is_empty());
    t.dump(vec![s1(), s2()], &mut empty, 4_500, &mut out);
    let ev = nets(&out);
    assert_eq!(
        (ev[0].phase.as_str(), ev[0].attribution.as_str()),
        ("open", "uid")
    );
    // Closed while waiting: one close record, nothing else.
    out.clear();
    t.dump(
        vec![tcp(
            3,
            56,
            "10.0.0.5:40003",
            Some(SERVER),
            "established",
            5,
            0,
        )],
        &mut empty,
        5_000,
        &mut out,
    );
    t.closed(
        vec![tcp(3, 56, "10.0.0.5:40003", Some(SERVER), "close", 9, 0)],
        &mut empty,
        5_100,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].phase.as_str(), ev[0].bytes_out_delta, ev[0].start_ms),
        ("close", 9, 5_000)
    );
}

/// Who is what in `inbound_connections_belong_to_a_dual_stack_listener`.
fn who(ev: &NetworkEvent) -> (&str, &str, &str, &str) {
    (
        ev.phase.as_str(),
        ev.direction.as_str(),
        ev.attribution.as_str(),
        ev.process.as_ref().map_or("", |p| p.name.as_str()),
    )
}

/// A BitTorrent client's listener is dual-stack ([::]:6881) and accepts
/// IPv4 connections (v4-mapped); connections accepted and closed between
/// two dumps, or still in the listener's queue at a dump (inode 0), or
/// whose owner /proc did not tell in time, are the listener's owner's
/// (issue 21: the swarm test's short inbound connections had only a uid).
#[test]
fn inbound_connections_belong_to_a_dual_stack_listener() {
    let cfg = cfg();
    let mut t = table(&cfg, HashMap::new());
    let mut p = procs();
    let mut empty = Procs(HashMap::new());
    let mut out = Vec::new();
    // A port probe on 0.0.0.0:6881, closed before any dump saw the
    // listener: waits for the dump that sees it.
    t.closed(
        vec![tcp(20, 0, "0.0.0.0:6881", None, "close", 0, 0)],
        &mut p,
        500,
        &mut out,
    );
    assert!(out.is_empty(), "{out:#?}");
    let listener = || tcp(1, 12, "[::]:6881", None, "listen", 0, 0);
    // Accepted, not yet taken from the queue: no inode.
    let queued = |inode| {
        tcp(
            2,
            inode,
            "[::ffff:10.77.0.1]:6881",
            Some("[::ffff:10.77.0.5]:50000"),
            "established",
            68,
            68,
        )
    };
    t.dump(vec![listener(), queued(0)], &mut p, 1_000, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 2, "{ev:#?}");
    assert_eq!(who(ev[0]), ("listen_open", "listening", "socket", "nginx"));
    assert_eq!(
        who(ev[1]),
        ("listen_close", "listening", "inferred", "nginx")
    );
    assert_eq!(ev[1].local_port, 6881);
    out.clear();
    // The next dump has its inode: its owner is found.
    t.dump(vec![listener(), queued(12)], &mut p, 2_000, &mut out);
    let ev = nets(&out);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(who(ev[0]), ("open", "inbound", "socket", "nginx"));
    assert_eq!(ev[0].local_ip, "10.77.0.1");
    out.clear();
    // Accepted and closed between two dumps (IPv4 and v4-mapped IPv6).
    t.closed(
        vec![
            tcp(
                3,
                0,
                "10.77.0.1:6881",
                Some("10.77.0.6:40000"),
                "close",
                900,
                800,
            ),
            tcp(
                4,
                0,
                "[::ffff:10.77.0.1]:6881",
                Some("[::ffff:10.77.0.7]:40000"),
                "close",
                900,
                800,
            ),
        ],
        &mut p,
        2_500,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(ev.len(), 2, "{ev:#?}");
    for e in &ev {
        assert_eq!(who(e), ("close", "inbound", "inferred", "nginx"));
    }
    out.clear();
    // Its owner never found by /proc (the process table lags): inferred
    // when the wait is over.
    let late = || {
        tcp(
            5,
            77,
            "10.77.0.1:6881",
            Some("10.77.0.8:40000"),
            "established",
            10,
            10,
        )
    };
    t.dump(
        vec![listener(), queued(12), late()],
        &mut empty,
        3_000,
        &mut out,
    );
    assert!(out.is_empty(), "{out:#?}");
    t.dump(
        vec![listener(), queued(12), late()],
        &mut empty,
        6_000,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(who(ev[0]), ("open", "inbound", "inferred", "nginx"));
    out.clear();
    // An outbound orphan (inode 0: its process closed it) to a peer only
    // that process talks to: inferred after the wait.
    let orphan = || {
        tcp(
            6,
            0,
            "10.77.0.1:41000",
            Some("10.77.0.5:6881"),
            "fin_wait1",
            0,
            0,
        )
    };
    t.dump(
        vec![listener(), queued(12), late(), orphan()],
        &mut empty,
        7_000,
        &mut out,
    );
    assert!(out.is_empty(), "{out:#?}");
    t.dump(
        vec![listener(), queued(12), late(), orphan()],
        &mut empty,
        10_000,
        &mut out,
    );
    let ev = nets(&out);
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(who(ev[0]), ("open", "outbound", "inferred", "nginx"));
}
