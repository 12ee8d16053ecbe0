//! One follower per configured log file, on its own thread: reads complete
//! lines from its saved position, records them in batches together with
//! the position after them ([`Buffer::append_batch_with`]: records and
//! position durable together, so a kill -9 neither skips nor repeats a
//! line), and follows the file across rotation:
//! - by rename (logrotate's default, Postfix's `postfix logrotate`): the
//!   open file is read to its end, a last line without a newline included,
//!   then the new file at the path is read from its start;
//! - by copytruncate: the file got shorter than the position, so it is
//!   read again from its start (lines written between the copy and the
//!   truncation are lost by that method itself, for every reader);
//! - a file that does not exist yet is waited for (said once) and read from
//!   its start when it appears.
//!
//! After a restart, a saved position whose file is no longer at the path
//! (rotated while the agent was down) is looked up among the path's
//! siblings by device and inode (`mail.log.1`, `maillog-20261206`...):
//! its rest is read first. A rotated file already compressed or deleted
//! cannot be: that is logged as a possible loss.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiroku_proto::event::Kind;

use super::position::Position;
use super::{Counters, Format, MtaLogConfig, StartAt, header::Clock};
use crate::buffer::{Buffer, BufferError, KeyedState};
use crate::capture::context::CaptureContext;

/// How often an idle follower looks for new lines and rotation.
const POLL: Duration = Duration::from_millis(200);
/// How long it waits after the buffer refused a batch.
const RETRY: Duration = Duration::from_secs(1);
/// Most lines in one record batch (one transaction, one flush).
pub const BATCH_LINES: usize = 512;
/// Bytes read at a time.
const READ_BYTES: usize = 256 * 1024;
/// A "line" longer than this without a newline is recorded in pieces.
const MAX_LINE: usize = 64 * 1024;

/// The keyed state of positions (key: the configured path).
pub const POSITIONS: &str = "mta_log_positions";

/// The file being read.
struct Open {
    file: File,
    pos: Position,
    /// Bytes read after `pos.offset`, not yet a complete line.
    pending: Vec<u8>,
    /// Where `file` was found (the path, or a rotated sibling).
    path: PathBuf,
}

pub struct Follower {
    pub cfg: MtaLogConfig,
    pub buffer: Arc<Buffer>,
    pub ctx: Arc<CaptureContext>,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
    pub rt: tokio::runtime::Handle,
    /// The zone of timestamps without one (the host's).
    pub tz: jiff::tz::TimeZone,
}

enum Read {
    /// Records written (or nothing new yet).
    Progress(bool),
    /// The buffer refused; try again later.
    Refused,
}

impl Follower {
    fn key(&self) -> Vec<u8> {
        self.cfg.path.as_os_str().as_encoded_bytes().to_vec()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn sleep(&self, d: Duration) {
        let end = std::time::Instant::now() + d;
        while !self.stopped() && std::time::Instant::now() < end {
            std::thread::sleep(POLL.min(d));
        }
    }

    /// Runs until `stop` is set.
    pub fn run(self) {
        let state = self.buffer.keyed_state(POSITIONS);
        let mut said_missing = false;
        let mut first_look = true;
        let mut open: Option<Open> = None;
        while !self.stopped() {
            if !self.buffer.is_open() {
                self.sleep(RETRY);
                continue;
            }
            let Some(cur) = open.as_mut() else {
                match self.open_at_start(&state, first_look) {
                    Ok(Some(o)) => {
                        if said_missing {
                            tracing::info!(path = %self.cfg.path.display(), "MTA log appeared: following it");
                        }
                        said_missing = false;
                        open = Some(o);
                    }
                    Ok(None) => {
                        if !said_missing {
                            tracing::warn!(path = %self.cfg.path.display(), "MTA log does not exist (yet): waiting for it");
                            said_missing = true;
                        }
                        self.sleep(POLL);
                    }
                    Err(e) => {
                        tracing::warn!(path = %self.cfg.path.display(), error = %e, "cannot open the MTA log; retrying (check its permissions)");
                        self.sleep(RETRY);
                    }
                }
                first_look = false;
                continue;
            };
            match self.read_some(cur, &state, false) {
                Ok(Read::Progress(true)) => continue,
                Ok(Read::Progress(false)) => {}
                Ok(Read::Refused) => {
                    self.sleep(RETRY);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path = %cur.path.display(), error = %e, "reading the MTA log failed; retrying");
                    self.sleep(RETRY);
                    continue;
                }
            }
            self.counters.report_now_and_then(&self.cfg.path);
            // At the end: rotated, truncated, or just idle?
            match self.rotation(cur) {
                Ok(Rotation::None) => self.sleep(POLL),
                Ok(Rotation::Truncated) => {
                    tracing::info!(path = %cur.path.display(), "MTA log was truncated (copytruncate): reading it again from its start");
                    match Position::start_of(&cur.file) {
                        Ok(p) => {
                            cur.pos = p;
                            cur.pending.clear();
                            self.save_bare(&state, &cur.pos);
                        }
                        Err(e) => {
                            tracing::warn!(path = %cur.path.display(), error = %e, "cannot read the truncated MTA log")
                        }
                    }
                }
                Ok(Rotation::Replaced(file)) => {
                    // Finish the old file, its last line even without a newline.
                    if let Some(o) = open.as_mut() {
                        loop {
                            match self.read_some(o, &state, true) {
                                Ok(Read::Progress(true)) => continue,
                                Ok(Read::Progress(false)) => break,
                                Ok(Read::Refused) => self.sleep(RETRY),
                                Err(e) => {
                                    tracing::warn!(path = %o.path.display(), error = %e, "reading the rest of the rotated MTA log failed; lines after this point in it are lost");
                                    break;
                                }
                            }
                            if self.stopped() {
                                return;
                            }
                        }
                    }
                    tracing::info!(path = %self.cfg.path.display(), "MTA log rotated: following the new file");
                    match Position::start_of(&file) {
                        Ok(pos) => {
                            self.save_bare(&state, &pos);
                            open = Some(Open {
                                file,
                                pos,
                                pending: Vec::new(),
                                path: self.cfg.path.clone(),
                            });
                        }
                        Err(e) => {
                            tracing::warn!(path = %self.cfg.path.display(), error = %e, "cannot read the new MTA log");
                            open = None;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %self.cfg.path.display(), error = %e, "cannot check the MTA log for rotation");
                    self.sleep(RETRY);
                }
            }
        }
    }

    /// A position without records (a new file started): written outside a
    /// record transaction. Losing it in a crash only means the old
    /// position is used, which finds the same place.
    fn save_bare(&self, state: &KeyedState, pos: &Position) {
        if let Err(e) = state.insert(self.key(), pos.encode()) {
            tracing::warn!(path = %self.cfg.path.display(), error = %e, "cannot save the MTA log position");
        }
    }

    /// Opens the file to follow when nothing is open: the saved position's
    /// file (at the path or a rotated sibling) or the path's file.
    fn open_at_start(&self, state: &KeyedState, first_look: bool) -> Result<Option<Open>, String> {
        let saved = state
            .get(self.key())
            .map_err(|e| e.to_string())?
            .and_then(|b| Position::decode(&b));
        let file = match File::open(&self.cfg.path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.to_string()),
        };
        if let Some(saved) = saved {
            if let Some(f) = &file
                && saved.matches(f).map_err(|e| e.to_string())?
            {
                return Ok(file.map(|file| Open {
                    file,
                    pos: saved,
                    pending: Vec::new(),
                    path: self.cfg.path.clone(),
                }));
            }
            if let Some((path, f)) = rotated_sibling(&self.cfg.path, &saved) {
                tracing::info!(path = %self.cfg.path.display(), rotated = %path.display(), "MTA log was rotated while the agent was stopped: reading the rest of the old file first");
                return Ok(Some(Open {
                    file: f,
                    pos: saved,
                    pending: Vec::new(),
                    path,
                }));
            }
            if file.is_some() {
                tracing::warn!(path = %self.cfg.path.display(), "the MTA log is not the file the agent last read and that file was not found beside it (compressed or deleted): lines written to it after the agent stopped are lost; reading the current file from its start");
            }
        }
        let Some(file) = file else {
            return Ok(None);
        };
        let mut pos = Position::start_of(&file).map_err(|e| e.to_string())?;
        if saved.is_none() && first_look && self.cfg.start_at == StartAt::End {
            pos.offset = file.metadata().map_err(|e| e.to_string())?.len();
            tracing::info!(path = %self.cfg.path.display(), offset = pos.offset, "following the MTA log from its end (start_at = \"end\"; its earlier lines are not recorded)");
            self.save_bare(state, &pos);
        }
        Ok(Some(Open {
            file,
            pos,
            pending: Vec::new(),
            path: self.cfg.path.clone(),
        }))
    }

    /// Reads and records one batch. `to_end`: the file will not grow any
    /// more (rotated away), so a last line without a newline counts.
    fn read_some(&self, o: &mut Open, state: &KeyedState, to_end: bool) -> std::io::Result<Read> {
        // Fill `pending` until it holds a batch or the file ends.
        let mut eof = false;
        while o.pending.iter().filter(|b| **b == b'\n').count() < BATCH_LINES && !eof {
            let at = o.pos.offset + o.pending.len() as u64;
            let before = o.pending.len();
            o.pending.resize(before + READ_BYTES, 0);
            let n = crate::os::read_at(&o.file, &mut o.pending[before..], at)?;
            o.pending.truncate(before + n);
            eof = n == 0 || n < READ_BYTES;
            if o.pending.len() >= READ_BYTES * 4 {
                break;
            }
        }
        let clock = Clock {
            tz: self.tz.clone(),
            now_ms: kiroku_common::now_ms(),
        };
        let mut events = Vec::new();
        let mut used = 0usize;
        while events.len() < BATCH_LINES {
            let rest = &o.pending[used..];
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(i) if i <= MAX_LINE => (&rest[..i], i + 1),
                _ if rest.len() >= MAX_LINE => (&rest[..MAX_LINE], MAX_LINE),
                _ if to_end && !rest.is_empty() => (rest, rest.len()),
                _ => break,
            };
            let offset = o.pos.offset + used as u64;
            events.push(self.record(line, offset, &clock));
            used += next;
        }
        if events.is_empty() {
            return Ok(Read::Progress(false));
        }
        let mut pos = o.pos;
        pos.offset += used as u64;
        pos.refresh_head(&o.file)?;
        let (key, value) = (self.key(), pos.encode());
        let committed_value = value.clone();
        let n = events.len() as u64;
        let unparsed = events
            .iter()
            .filter(|e| matches!(&e.kind, Some(Kind::MtaLog(m)) if !m.parsed))
            .count() as u64;
        let r = self
            .rt
            .block_on(self.buffer.append_batch_with(events, state, move |tx| {
                tx.insert(&key, &value)?;
                Ok(())
            }));
        // The records and the position are one transaction: when the call
        // failed after that transaction committed (its flush failed, or the
        // buffer was reopened meanwhile), the saved position says so, and
        // reading the same bytes again would record them twice.
        let committed = |r: &Result<_, BufferError>| {
            r.is_ok()
                || state.get(self.key()).ok().flatten().as_deref() == Some(&committed_value[..])
        };
        if committed(&r) {
            if let Err(e) = &r {
                tracing::warn!(path = %self.cfg.path.display(), error = %e, "MTA log lines were recorded but the buffer's flush failed; they are not read again");
            }
            o.pending.drain(..used);
            o.pos = pos;
            self.counters.add(n, unparsed);
            return Ok(Read::Progress(true));
        }
        if let Err(e) = r {
            self.refused(&e);
        }
        Ok(Read::Refused)
    }

    fn refused(&self, e: &BufferError) {
        if self.counters.note_refusal() {
            tracing::warn!(path = %self.cfg.path.display(), error = %e, "MTA log reading paused: the buffer refused its records; it resumes at the same line (nothing is skipped while the file is still there)");
        }
    }

    fn record(&self, line: &[u8], offset: u64, clock: &Clock) -> kiroku_proto::Event {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let mut m = match self.cfg.format {
            Format::Postfix => super::postfix::parse(line, clock),
            Format::Exim => super::exim::parse(line, clock),
        };
        m.log_path = self.cfg.path.display().to_string();
        m.offset = offset;
        self.ctx.event(String::new(), Kind::MtaLog(m))
    }

    /// What happened to the path since the open file was opened.
    fn rotation(&self, o: &Open) -> std::io::Result<Rotation> {
        let now = match File::open(&self.cfg.path) {
            Ok(f) => f,
            // Moved away and not recreated yet: keep reading the old one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Rotation::None),
            Err(e) => return Err(e),
        };
        let (m, id) = (now.metadata()?, crate::os::file_id(&now)?);
        if id.dev != o.pos.dev || id.ino != o.pos.ino {
            return Ok(Rotation::Replaced(now));
        }
        // Shorter than the position, or truncated and refilled past it
        // between two looks (its first bytes changed).
        if m.len() < o.pos.offset || !o.pos.matches(&o.file)? {
            return Ok(Rotation::Truncated);
        }
        Ok(Rotation::None)
    }
}

enum Rotation {
    None,
    Truncated,
    Replaced(File),
}

/// The file beside `path` whose name starts with its name and that is the
/// saved position's file (same device, inode and first bytes).
fn rotated_sibling(path: &Path, saved: &Position) -> Option<(PathBuf, File)> {
    let dir = path.parent()?;
    let name = path.file_name()?.to_str()?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let Some(n) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if n == name || !n.starts_with(name) {
            continue;
        }
        let Ok(id) = crate::os::path_id(&p) else {
            continue;
        };
        if id.dev != saved.dev || id.ino != saved.ino {
            continue;
        }
        let f = File::open(&p).ok()?;
        if saved.matches(&f).ok()? {
            return Some((p, f));
        }
    }
    None
}
