//! The session driven in-process, as Stalwart's inbound tests drive theirs:
//! a real `Session` on a loopback socket, a real buffer in a temp dir, and
//! a scripted upstream (a loopback listener answering each command from a
//! table), so a verb's behaviour and what it records are checked without
//! starting the agent binary. The end-to-end tests in `tests/` cover the
//! same paths against real MTAs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kiroku_proto::{Event, Outcome, event::Kind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::super::SmtpCapture;
use crate::buffer::Buffer;
use crate::capture::context::{CaptureContext, Clock};
use crate::config::{SmtpConfig, SmtpMode, UpstreamTls, WhenFull};
use crate::gaps::Gaps;

/// Bounds every wait in these tests: a hang fails instead of blocking.
const WAIT: Duration = Duration::from_secs(10);

/// How the scripted upstream behaves.
#[derive(Clone)]
pub(crate) struct Script {
    /// The greeting line (with code), e.g. `220 up ESMTP`.
    pub greeting: String,
    /// Seconds to wait before greeting.
    pub greeting_delay: Duration,
    /// Replies by verb (upper case); a verb not listed gets `250 ok`.
    pub replies: Vec<(&'static str, String)>,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: "220 up.test ESMTP scripted".into(),
            greeting_delay: Duration::ZERO,
            replies: vec![
                (
                    "EHLO",
                    "250-up.test\r\n250-PIPELINING\r\n250 8BITMIME".into(),
                ),
                ("DATA", "354 go ahead".into()),
                (".", "250 2.0.0 Ok: queued as 4ABCD".into()),
                ("QUIT", "221 2.0.0 Bye".into()),
            ],
        }
    }
}

impl Script {
    pub(crate) fn with(mut self, verb: &'static str, reply: &str) -> Script {
        self.replies.retain(|(v, _)| *v != verb);
        self.replies.push((verb, reply.to_owned()));
        self
    }

    fn reply(&self, verb: &str) -> String {
        self.replies
            .iter()
            .find(|(v, _)| *v == verb)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| "250 2.0.0 ok".into())
    }
}

/// Starts a scripted upstream on a free loopback port; every connection
/// follows `script`. Returns its address and the lines it received.
pub(crate) async fn scripted_upstream(
    script: Script,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_scripted(s, script.clone(), log.clone()));
        }
    });
    (addr, seen)
}

async fn serve_scripted(s: TcpStream, script: Script, seen: Arc<std::sync::Mutex<Vec<String>>>) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    tokio::time::sleep(script.greeting_delay).await;
    let say = |t: String| format!("{t}\r\n").into_bytes();
    if w.write_all(&say(script.greeting.clone())).await.is_err() {
        return;
    }
    let mut in_data = false;
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let l = line.trim_end_matches(['\r', '\n']).to_owned();
        let verb = if in_data {
            if l != "." {
                continue;
            }
            in_data = false;
            ".".to_owned()
        } else {
            l.split(' ').next().unwrap_or("").to_ascii_uppercase()
        };
        seen.lock().expect("lock").push(l);
        let reply = script.reply(&verb);
        if verb == "DATA" && reply.starts_with("354") {
            in_data = true;
        }
        if w.write_all(&say(reply)).await.is_err() || verb == "QUIT" {
            return;
        }
    }
}

/// A relay (or capture-only) listener with its buffer in a temp dir; each
/// accepted connection runs one real session.
pub(crate) struct Harness {
    pub cap: Arc<SmtpCapture>,
    pub buffer: Arc<Buffer>,
    pub addr: SocketAddr,
    stop: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A relay to `upstream` (`None`: capture-only).
    pub(crate) async fn start(upstream: Option<SocketAddr>) -> Harness {
        Harness::with_config(Harness::config(upstream)).await
    }

    pub(crate) fn config(upstream: Option<SocketAddr>) -> SmtpConfig {
        SmtpConfig {
            mode: if upstream.is_some() {
                SmtpMode::Relay
            } else {
                SmtpMode::CaptureOnly
            },
            upstream: upstream.map(|a| a.to_string()),
            upstream_tls: UpstreamTls::Off,
            hostname: Some("relay.test".into()),
            ..SmtpConfig::default()
        }
    }

    pub(crate) async fn with_config(cfg: SmtpConfig) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let buffer = Buffer::open(dir.path(), u64::MAX, 1 << 20).expect("buffer");
        let ctx = CaptureContext::new(
            "test-agent".into(),
            kiroku_proto::HostIdentity::default(),
            "agent".into(),
            Default::default(),
            Clock::from_env(),
        );
        let gaps = Gaps::new(buffer.clone(), ctx.clone());
        let cap =
            SmtpCapture::new(cfg, buffer.clone(), WhenFull::Refuse, gaps, ctx).expect("capture");
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let live = crate::capture::smtp::Live::new(cap.clone());
        let serving = tokio::spawn(cap.clone().serve(live, vec![l], async {
            let _ = stopped.await;
        }));
        Harness {
            cap,
            buffer,
            addr,
            stop: Some((stop, serving)),
            _dir: dir,
        }
    }

    /// Stops the listener as the agent's shutdown does (sessions drained,
    /// open incidents closed and written).
    pub(crate) async fn stop(&mut self) {
        if let Some((stop, serving)) = self.stop.take() {
            let _ = stop.send(());
            tokio::time::timeout(WAIT, serving)
                .await
                .expect("stopped in time")
                .expect("serve");
        }
    }

    pub(crate) async fn client(&self) -> Client {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let (r, w) = s.into_split();
        Client {
            r: BufReader::new(r),
            w,
        }
    }

    /// The incident records in the buffer so far.
    pub(crate) fn incidents(&self) -> Vec<kiroku_proto::IncidentEvent> {
        self.buffer
            .read_batch(0, 10_000, 64 << 20)
            .expect("read")
            .into_iter()
            .filter_map(|e| match e.kind {
                Some(Kind::Incident(i)) => Some(i),
                _ => None,
            })
            .collect()
    }

    /// Waits until the buffer holds `n` records and returns them.
    pub(crate) async fn records(&self, n: usize) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.buffer.read_batch(0, 1000, 64 << 20).expect("read");
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A line-by-line SMTP client.
pub(crate) struct Client {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    /// Reads one (possibly multi-line) reply: its code and last line.
    pub(crate) async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.r.read_line(&mut line))
                .await
                .expect("reply in time")
                .expect("read");
            if n == 0 {
                return (0, text);
            }
            let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            text = line.trim_end().to_owned();
            if line.as_bytes().get(3) != Some(&b'-') {
                return (code, text);
            }
        }
    }

    pub(crate) async fn send(&mut self, line: &str) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
    }

    /// Sends a command and returns the reply's code and last line.
    pub(crate) async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(line).await;
        self.reply().await
    }
}

fn email(e: &Event) -> &kiroku_proto::EmailEvent {
    match &e.kind {
        Some(Kind::Email(m)) => m,
        other => panic!("not a mail record: {other:?}"),
    }
}

mod incidents;

const MESSAGE: &str = "Subject: hello\r\nFrom: a@example.org\r\n\r\nbody line\r\n.";

#[tokio::test]
async fn relay_delivers_and_records_queue_id() {
    let (up, seen) = scripted_upstream(Script::default()).await;
    let h = Harness::start(Some(up)).await;
    let mut c = h.client().await;
    assert_eq!(c.reply().await.0, 220);
    assert_eq!(c.cmd("EHLO client.test").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    let (code, text) = c.cmd(MESSAGE).await;
    assert_eq!((code, text.contains("4ABCD")), (250, true), "{text}");
    assert_eq!(c.cmd("QUIT").await.0, 221);
    let recs = h.records(1).await;
    assert_eq!(recs.len(), 1);
    let m = email(&recs[0]);
    assert_eq!(m.outcome, Outcome::Delivered as i32);
    assert_eq!(m.upstream_queue_id, "4ABCD");
    assert_eq!(m.mail_from, "a@example.org");
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter().any(|l| l == "MAIL FROM:<a@example.org>"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn capture_only_answers_itself() {
    let h = Harness::start(None).await;
    let mut c = h.client().await;
    assert_eq!(c.reply().await.0, 220);
    assert_eq!(c.cmd("EHLO client.test").await.0, 250);
    // DATA before any accepted RCPT is refused by the capture itself.
    assert_eq!(c.cmd("DATA").await.0, 503);
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    assert_eq!(c.cmd(MESSAGE).await.0, 250);
    let recs = h.records(1).await;
    assert_eq!(email(&recs[0]).outcome, Outcome::Captured as i32);
}

#[tokio::test]
async fn refused_rcpt_and_rset_record_the_abandoned_envelope() {
    let script = Script::default().with("RCPT", "550 5.1.1 no such user");
    let (up, _) = scripted_upstream(script).await;
    let h = Harness::start(Some(up)).await;
    let mut c = h.client().await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.org>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.org>").await.0, 550);
    assert_eq!(c.cmd("RSET").await.0, 250);
    let recs = h.records(1).await;
    assert_eq!(recs.len(), 1);
    let m = email(&recs[0]);
    assert_eq!(m.outcome, Outcome::Aborted as i32);
    assert_eq!(m.ended_at, "RSET");
    assert_eq!(m.rcpt_to.first().map(|r| r.reply_code), Some(550));
}

#[tokio::test]
async fn upstream_refusing_at_greeting_is_passed_on() {
    let script = Script {
        greeting: "554 5.3.2 not accepting mail".into(),
        ..Script::default()
    };
    let (up, _) = scripted_upstream(script).await;
    let h = Harness::start(Some(up)).await;
    let mut c = h.client().await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 554, "{text}");
    // The session is over: the next read sees the close.
    assert_eq!(c.reply().await.0, 0);
}

#[tokio::test]
async fn upstream_unreachable_gives_421() {
    // A port that was free a moment ago: nothing listens there.
    let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = free.local_addr().expect("addr");
    drop(free);
    let h = Harness::start(Some(dead)).await;
    let mut c = h.client().await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.contains("4.4.1"), "{text}");
}

#[tokio::test]
async fn bdat_and_http_are_not_relayed() {
    let (up, seen) = scripted_upstream(Script::default()).await;
    let h = Harness::start(Some(up)).await;
    let mut c = h.client().await;
    c.reply().await;
    assert_eq!(c.cmd("BDAT 10 LAST").await.0, 502);
    assert_eq!(c.cmd("GET / HTTP/1.1").await.0, 500);
    let seen = seen.lock().expect("lock").clone();
    assert!(
        !seen
            .iter()
            .any(|l| l.starts_with("BDAT") || l.starts_with("GET")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn oversized_message_is_refused_and_recorded_without_content() {
    let (up, seen) = scripted_upstream(Script::default()).await;
    let cfg = SmtpConfig {
        mode: SmtpMode::Relay,
        upstream: Some(up.to_string()),
        upstream_tls: UpstreamTls::Off,
        max_message_bytes: 64,
        ..SmtpConfig::default()
    };
    let h = Harness::with_config(cfg).await;
    let mut c = h.client().await;
    c.reply().await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@example.org>").await;
    c.cmd("RCPT TO:<b@example.org>").await;
    assert_eq!(c.cmd("DATA").await.0, 354);
    let big = format!("Subject: big\r\n\r\n{}\r\n.", "x".repeat(200));
    let (code, text) = c.cmd(&big).await;
    assert_eq!(code, 552, "{text}");
    let recs = h.records(1).await;
    let m = email(&recs[0]);
    assert_eq!(m.outcome, Outcome::Aborted as i32);
    assert_eq!(m.reply_code, 552);
    assert!(m.raw_sha256.is_empty());
    // The upstream never got an end-of-data.
    let seen = seen.lock().expect("lock").clone();
    assert!(!seen.iter().any(|l| l == "."), "{seen:?}");
}
