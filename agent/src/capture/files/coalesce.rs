//! Pure bookkeeping between kernel events and records, kept free of I/O so
//! it is tested by tables: bursts of writes on one file become one record
//! ([`Coalescer`]), `IN_MOVED_FROM`/`IN_MOVED_TO` halves are paired by cookie
//! ([`MovePairs`]), and excluded paths are recognised ([`Exclusions`]).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a coalesced record says happened to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    Create,
    Modify,
}

#[derive(Debug)]
struct Pending {
    op: WriteOp,
    first: Instant,
    last: Instant,
    count: u32,
    /// Written since the last close: the file may still be in use.
    open: bool,
    /// Closed after writing at least once: its content is final for now.
    closed: bool,
    /// Someone was found holding it open for writing after a quiet window
    /// (so it is not asked about again: it waits for its close).
    writer_seen: bool,
}

/// A record ready to go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub path: PathBuf,
    pub op: WriteOp,
    /// Kernel events merged into it.
    pub count: u32,
    /// The writer closed the file: hash it.
    pub closed: bool,
    /// The first kernel event merged into it.
    pub first: Instant,
}

/// Merges create/modify/close-write events per path. A record is due
/// `window` after its last event, unless the file is still open for writing;
/// then it waits for the close, at most `max_hold` from its first event.
///
/// inotify does not say whether a file written without a close seen is
/// still open: `truncate(2)` by path is a lone `IN_MODIFY`. A file quiet
/// for `window` with no close is therefore [`Coalescer::unconfirmed`]: the
/// caller looks for a process holding it open for writing and answers with
/// [`Coalescer::writer`]; with none, the content is final and the record is
/// due (and hashed) at once.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    max_hold: Duration,
    pending: HashMap<PathBuf, Pending>,
}

impl Coalescer {
    pub fn new(window: Duration, max_hold: Duration) -> Coalescer {
        Coalescer {
            window,
            max_hold,
            pending: HashMap::new(),
        }
    }

    fn touch(&mut self, path: &Path, op: WriteOp, now: Instant) -> &mut Pending {
        let p = self
            .pending
            .entry(path.to_owned())
            .or_insert_with(|| Pending {
                op,
                first: now,
                last: now,
                count: 0,
                open: false,
                closed: false,
                writer_seen: false,
            });
        p.count += 1;
        p.last = now;
        p
    }

    pub fn create(&mut self, path: &Path, now: Instant) {
        let p = self.touch(path, WriteOp::Create, now);
        p.open = true;
    }

    pub fn modify(&mut self, path: &Path, now: Instant) {
        let p = self.touch(path, WriteOp::Modify, now);
        p.open = true;
    }

    pub fn close_write(&mut self, path: &Path, now: Instant) {
        let p = self.touch(path, WriteOp::Modify, now);
        p.open = false;
        p.closed = true;
    }

    /// Files quiet for the window, written without a close seen, whose
    /// writer has not been looked for yet.
    pub fn unconfirmed(&self, now: Instant) -> Vec<PathBuf> {
        self.pending
            .iter()
            .filter(|(_, p)| p.open && !p.writer_seen && now >= p.last + self.window)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Answers [`Coalescer::unconfirmed`]: whether a process still has
    /// `path` open for writing. Without one the content is final: the
    /// record is due and hashed, as after a close.
    pub fn writer(&mut self, path: &Path, open: bool) {
        if let Some(p) = self.pending.get_mut(path) {
            if open {
                p.writer_seen = true;
            } else {
                p.open = false;
                p.closed = true;
            }
        }
    }

    /// Files a writer was found holding open ([`Coalescer::writer`]) that
    /// are not due yet. Where the system reports no close (Windows), the
    /// caller asks about them again and answers with
    /// [`Coalescer::writer`]: once nobody holds one, it is due.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub fn held(&self) -> Vec<PathBuf> {
        self.pending
            .iter()
            .filter(|(_, p)| p.open && p.writer_seen)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Gives back the memory a burst left in the table (a `HashMap` never
    /// shrinks by itself): called when the watcher is idle.
    pub fn compact(&mut self) {
        if self.pending.capacity() > 4 * self.pending.len().max(256) {
            self.pending.shrink_to_fit();
        }
    }

    /// The pending record of `path`, out of turn (before a delete or a
    /// rename of the same path is recorded).
    pub fn take(&mut self, path: &Path) -> Option<Ready> {
        self.pending.remove(path).map(|p| ready(path.to_owned(), p))
    }

    /// Pending records of `dir` and everything below it, out of turn.
    pub fn take_under(&mut self, dir: &Path) -> Vec<Ready> {
        let paths: Vec<PathBuf> = self
            .pending
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        paths.iter().filter_map(|p| self.take(p)).collect()
    }

    fn is_due(&self, p: &Pending, now: Instant) -> bool {
        let quiet = now >= p.last + self.window;
        quiet && (!p.open || now >= p.first + self.max_hold)
    }

    /// Records due at `now`, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Ready> {
        let mut paths: Vec<(Instant, PathBuf)> = self
            .pending
            .iter()
            .filter(|(_, p)| self.is_due(p, now))
            .map(|(k, p)| (p.first, k.clone()))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|(_, k)| self.take(&k))
            .collect()
    }

    /// Everything pending (agent shutdown).
    pub fn drain(&mut self) -> Vec<Ready> {
        let mut all: Vec<(Instant, PathBuf)> = self
            .pending
            .iter()
            .map(|(k, p)| (p.first, k.clone()))
            .collect();
        all.sort();
        all.into_iter().filter_map(|(_, k)| self.take(&k)).collect()
    }

    /// When the next record can become due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| {
                let quiet = p.last + self.window;
                if p.open && p.writer_seen {
                    quiet.max(p.first + self.max_hold)
                } else {
                    // Due, or due to be asked about its writer.
                    quiet
                }
            })
            .min()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn ready(path: PathBuf, p: Pending) -> Ready {
    Ready {
        path,
        op: p.op,
        count: p.count,
        closed: p.closed,
        first: p.first,
    }
}

/// One half of a rename whose other half has not arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedFrom {
    pub path: PathBuf,
    pub is_dir: bool,
}

/// Pairs `IN_MOVED_FROM` with `IN_MOVED_TO` by cookie. A `MOVED_FROM`
/// without partner after `grace` was a move out of the watched tree (a
/// delete); a `MOVED_TO` without partner a move into it (a create).
#[derive(Debug)]
pub struct MovePairs {
    grace: Duration,
    waiting: VecDeque<(u32, Instant, MovedFrom)>,
}

impl MovePairs {
    pub fn new(grace: Duration) -> MovePairs {
        MovePairs {
            grace,
            waiting: VecDeque::new(),
        }
    }

    pub fn moved_from(&mut self, cookie: u32, from: MovedFrom, now: Instant) {
        self.waiting.push_back((cookie, now, from));
    }

    /// The `MOVED_FROM` half of `cookie`, if it was seen.
    pub fn moved_to(&mut self, cookie: u32) -> Option<MovedFrom> {
        let i = self.waiting.iter().position(|(c, _, _)| *c == cookie)?;
        self.waiting.remove(i).map(|(_, _, f)| f)
    }

    /// Halves whose partner did not come within `grace`: moved out.
    pub fn expired(&mut self, now: Instant) -> Vec<MovedFrom> {
        let mut out = Vec::new();
        while let Some((_, at, _)) = self.waiting.front() {
            if now < *at + self.grace {
                break;
            }
            if let Some((_, _, f)) = self.waiting.pop_front() {
                out.push(f);
            }
        }
        out
    }

    /// Every half still waiting (after a queue overflow the partner may
    /// have been dropped by the kernel; at shutdown it will never come).
    pub fn drain(&mut self) -> Vec<MovedFrom> {
        self.waiting.drain(..).map(|(_, _, f)| f).collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.front().map(|(_, at, _)| *at + self.grace)
    }

    /// Gives back the memory a burst of renames left in the queue.
    pub fn compact(&mut self) {
        if self.waiting.capacity() > 4 * self.waiting.len().max(256) {
            self.waiting.shrink_to_fit();
        }
    }
}

/// `files.exclude` compiled. Patterns ending in `/**` also exclude the
/// directory itself from being watched (no kernel watch is spent on it).
///
/// On Windows ([`PathStyle::Windows`]) paths and patterns are compared
/// with `\` and `/` as the same separator and without regard to case, as
/// the file system does: `C:\Users\*\AppData\**` (or
/// `c:/users/*/appdata/**`) excludes every user's AppData tree, `**\*.tmp`
/// every `.TMP` file. A backslash there is a separator, never an escape
/// (Windows names cannot hold `*`, `?` or `\`).
#[derive(Debug, Clone)]
pub struct Exclusions {
    paths: globset::GlobSet,
    dirs: globset::GlobSet,
    /// Trees never recorded whatever the patterns say: the agent's own data
    /// directory (recording its own buffer writes would feed itself).
    trees: Vec<PathBuf>,
    style: PathStyle,
}

/// How paths are spelled and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStyle {
    /// `/` only, case-sensitive.
    Unix,
    /// `\` or `/`, case-insensitive.
    Windows,
}

impl PathStyle {
    /// This system's.
    pub const NATIVE: PathStyle = if cfg!(windows) {
        PathStyle::Windows
    } else {
        PathStyle::Unix
    };
}

impl Exclusions {
    pub fn new(patterns: &[String]) -> Result<Exclusions, globset::Error> {
        Exclusions::with_style(patterns, PathStyle::NATIVE)
    }

    /// Compiled for paths of `style` (the tests build Windows ones on Linux).
    pub fn with_style(patterns: &[String], style: PathStyle) -> Result<Exclusions, globset::Error> {
        let glob = |p: &str| match style {
            PathStyle::Unix => globset::Glob::new(p),
            PathStyle::Windows => globset::GlobBuilder::new(&p.replace('\\', "/"))
                .case_insensitive(true)
                .backslash_escape(false)
                .build(),
        };
        let mut paths = globset::GlobSetBuilder::new();
        let mut dirs = globset::GlobSetBuilder::new();
        for p in patterns {
            paths.add(glob(p)?);
            let dir = match style {
                PathStyle::Unix => p.strip_suffix("/**"),
                PathStyle::Windows => p.strip_suffix("/**").or_else(|| p.strip_suffix("\\**")),
            };
            if let Some(dir) = dir
                && !dir.is_empty()
            {
                dirs.add(glob(dir)?);
            }
        }
        Ok(Exclusions {
            paths: paths.build()?,
            dirs: dirs.build()?,
            trees: Vec::new(),
            style,
        })
    }

    /// Also excludes `dir` and everything below it.
    pub fn with_tree(mut self, dir: PathBuf) -> Exclusions {
        self.trees.push(dir);
        self
    }

    fn in_tree(&self, p: &Path) -> bool {
        match self.style {
            PathStyle::Unix => self.trees.iter().any(|t| p.starts_with(t)),
            PathStyle::Windows => {
                let p = windows_key(p);
                self.trees.iter().any(|t| {
                    let t = windows_key(t);
                    let t = t.trim_end_matches('/');
                    p.strip_prefix(t)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
            }
        }
    }

    fn is_match(&self, set: &globset::GlobSet, p: &Path) -> bool {
        match self.style {
            PathStyle::Unix => set.is_match(p),
            PathStyle::Windows => set.is_match(windows_key(p)),
        }
    }

    /// Operations on this path are not recorded.
    pub fn path(&self, p: &Path) -> bool {
        self.in_tree(p) || self.is_match(&self.paths, p)
    }

    /// This directory is not watched at all.
    pub fn dir(&self, p: &Path) -> bool {
        self.in_tree(p) || self.is_match(&self.paths, p) || self.is_match(&self.dirs, p)
    }
}

/// A Windows path with `/` for every separator (the glob's case is
/// ignored by the glob itself; trees compare in lower case).
fn windows_key(p: &Path) -> String {
    p.to_string_lossy().replace('\\', "/").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Step {
        Create(&'static str),
        Modify(&'static str),
        Close(&'static str),
        /// From now on a process holds the file open for writing.
        Held(&'static str),
        /// Advance the clock (ms), answer the writer checks and collect
        /// what is due.
        Wait(u64),
    }
    use Step::*;

    /// (ms when due, path, op, count, closed).
    type Due<P> = (u64, P, WriteOp, u32, bool);
    /// (name, steps, records expected).
    type Case = (&'static str, Vec<Step>, Vec<Due<&'static str>>);

    /// Runs steps on a 100 ms window, 1 s hold; returns every record as it
    /// became due.
    fn run(steps: &[Step]) -> Vec<Due<String>> {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut now = 0u64;
        let mut out = Vec::new();
        let mut held = Vec::new();
        for s in steps {
            let at = t0 + Duration::from_millis(now);
            match s {
                Create(p) => c.create(Path::new(p), at),
                Modify(p) => c.modify(Path::new(p), at),
                Close(p) => c.close_write(Path::new(p), at),
                Held(p) => held.push(PathBuf::from(p)),
                Wait(ms) => {
                    now += ms;
                    let at = t0 + Duration::from_millis(now);
                    for p in c.unconfirmed(at) {
                        let open = held.contains(&p);
                        c.writer(&p, open);
                    }
                    for r in c.due(at) {
                        out.push((now, r.path.display().to_string(), r.op, r.count, r.closed));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn coalescing() {
        use WriteOp::Create as C;
        use WriteOp::Modify as M;
        let cases: Vec<Case> = vec![
            (
                "touch: create + close, due after the window",
                vec![Create("/a"), Close("/a"), Wait(50), Wait(60)],
                vec![(110, "/a", C, 2, true)],
            ),
            (
                "a burst of writes is one record with its count",
                vec![
                    Modify("/a"),
                    Wait(20),
                    Modify("/a"),
                    Wait(20),
                    Modify("/a"),
                    Close("/a"),
                    Wait(200),
                ],
                vec![(240, "/a", M, 4, true)],
            ),
            (
                "writes further apart than the window are separate records",
                vec![
                    Modify("/a"),
                    Close("/a"),
                    Wait(150),
                    Modify("/a"),
                    Close("/a"),
                    Wait(150),
                ],
                vec![(150, "/a", M, 2, true), (300, "/a", M, 2, true)],
            ),
            (
                "an open file waits for its close (up to the hold)",
                vec![
                    Create("/a"),
                    Held("/a"),
                    Wait(500),
                    Modify("/a"),
                    Wait(200),
                    Close("/a"),
                    Wait(100),
                ],
                vec![(800, "/a", C, 3, true)],
            ),
            (
                "a file never closed is reported after the hold, unhashed",
                vec![Create("/a"), Held("/a"), Wait(600), Modify("/a"), Wait(600)],
                vec![(1200, "/a", C, 2, false)],
            ),
            (
                "a modify nobody holds open (truncate by path) is complete after the window",
                vec![Modify("/a"), Wait(50), Wait(60)],
                vec![(110, "/a", M, 1, true)],
            ),
            (
                "a writer found once is not asked about again; its close ends the wait",
                vec![
                    Modify("/a"),
                    Held("/a"),
                    Wait(150),
                    Modify("/a"),
                    Wait(150),
                    Close("/a"),
                    Wait(100),
                ],
                vec![(400, "/a", M, 3, true)],
            ),
            (
                "different files are different records",
                vec![
                    Create("/a"),
                    Close("/a"),
                    Modify("/b"),
                    Close("/b"),
                    Wait(100),
                ],
                vec![(100, "/a", C, 2, true), (100, "/b", M, 2, true)],
            ),
        ];
        for (name, steps, want) in cases {
            let got = run(&steps);
            let want: Vec<_> = want
                .into_iter()
                .map(|(t, p, o, n, c)| (t, p.to_owned(), o, n, c))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn take_flushes_out_of_turn_and_deadline_follows_state() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_millis(1000));
        c.create(Path::new("/d/a"), t0);
        c.close_write(Path::new("/d/sub/b"), t0);
        assert_eq!(
            c.next_deadline(),
            Some(t0 + Duration::from_millis(100)),
            "the closed file is due first"
        );
        let taken = c.take_under(Path::new("/d/sub"));
        assert_eq!(taken.len(), 1);
        assert_eq!(
            c.next_deadline(),
            Some(t0 + Duration::from_millis(100)),
            "the open file is asked about after the window"
        );
        c.writer(Path::new("/d/a"), true);
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(1000)));
        assert_eq!(
            c.take(Path::new("/d/a")).map(|r| r.op),
            Some(WriteOp::Create)
        );
        assert!(c.is_empty());
    }

    #[test]
    fn held_files_are_asked_about_again_without_a_close() {
        // Windows: no close event; the writer probe is repeated.
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Duration::from_millis(100), Duration::from_millis(1000));
        c.modify(Path::new("C:\\w\\a.docx"), ms(0));
        assert!(c.held().is_empty(), "not asked about yet");
        assert_eq!(c.unconfirmed(ms(100)).len(), 1);
        c.writer(Path::new("C:\\w\\a.docx"), true);
        assert_eq!(c.held(), vec![PathBuf::from("C:\\w\\a.docx")]);
        assert!(c.due(ms(300)).is_empty(), "still held open");
        c.writer(Path::new("C:\\w\\a.docx"), false);
        let due = c.due(ms(300));
        assert_eq!(due.len(), 1);
        assert!(due[0].closed, "nobody holds it: hashed");
        assert_eq!(due[0].count, 1, "the probe is not an event");
        assert!(c.held().is_empty());
    }

    #[test]
    fn cookie_pairing() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = MovePairs::new(Duration::from_millis(100));
        let from = |p: &str| MovedFrom {
            path: PathBuf::from(p),
            is_dir: false,
        };
        m.moved_from(7, from("/w/a"), ms(0));
        m.moved_from(8, from("/w/b"), ms(10));
        // Pairs by cookie, in any order.
        assert_eq!(m.moved_to(8), Some(from("/w/b")));
        assert_eq!(m.moved_to(9), None, "moved in from outside");
        assert_eq!(m.expired(ms(50)), vec![], "still within the grace period");
        assert_eq!(m.next_deadline(), Some(ms(100)));
        assert_eq!(m.expired(ms(100)), vec![from("/w/a")], "moved out");
        assert_eq!(m.moved_to(7), None, "too late: already reported");
    }

    #[test]
    fn exclusion() {
        let x = Exclusions::new(&[
            "**/*.swp".to_owned(),
            "**/.cache/**".to_owned(),
            "/w/build/*.o".to_owned(),
        ])
        .expect("globs")
        .with_tree(PathBuf::from("/w/agent-data"));
        // (path, excluded as a path, excluded as a directory to watch)
        let cases = [
            ("/w/doc.txt", false, false),
            ("/w/.doc.txt.swp", true, true),
            ("/w/a/b/c.swp", true, true),
            ("/w/.cache", false, true),
            ("/w/.cache/x/y", true, true),
            ("/w/cache/x", false, false),
            ("/w/build/a.o", true, true),
            ("/w/build/a.c", false, false),
            ("/w/agent-data", true, true),
            ("/w/agent-data/sled/db", true, true),
            ("/w/agent-database", false, false),
        ];
        for (p, path, dir) in cases {
            assert_eq!(
                (x.path(Path::new(p)), x.dir(Path::new(p))),
                (path, dir),
                "{p}"
            );
        }
    }

    #[test]
    fn windows_exclusion() {
        let x = Exclusions::with_style(
            &[
                "C:\\Users\\*\\AppData\\**".to_owned(),
                "**\\*.tmp".to_owned(),
                "**/~$*".to_owned(),
                "D:\\Scratch\\*.log".to_owned(),
            ],
            PathStyle::Windows,
        )
        .expect("globs")
        .with_tree(PathBuf::from("C:\\ProgramData\\Kiroku\\agent"));
        // (path, excluded as a path, excluded as a directory to watch)
        let cases = [
            ("C:\\Users\\alice\\Documents\\q3.xlsx", false, false),
            ("C:\\Users\\alice\\AppData\\Local\\x.db", true, true),
            ("c:\\users\\BOB\\appdata\\Roaming\\y", true, true),
            ("C:\\Users\\alice\\AppData", false, true),
            ("C:\\Users\\alice\\AppDataBackup\\z", false, false),
            ("C:/Users/alice/AppData/Local/x.db", true, true),
            ("C:\\Users\\alice\\Desktop\\~$report.docx", true, true),
            ("C:\\Users\\alice\\Desktop\\report.docx", false, false),
            ("E:\\copy\\A.TMP", true, true),
            ("D:\\scratch\\build.LOG", true, true),
            ("D:\\scratch\\build.txt", false, false),
            ("C:\\ProgramData\\Kiroku\\agent", true, true),
            ("c:\\programdata\\kiroku\\AGENT\\buffer\\db", true, true),
            ("C:\\ProgramData\\Kiroku\\agent-old\\x", false, false),
        ];
        for (p, path, dir) in cases {
            assert_eq!(
                (x.path(Path::new(p)), x.dir(Path::new(p))),
                (path, dir),
                "{p}"
            );
        }
        // Unix style stays as it was: case matters, `\\` is an escape.
        let u = Exclusions::with_style(&["/w/*.TMP".to_owned()], PathStyle::Unix).expect("glob");
        assert!(u.path(Path::new("/w/a.TMP")));
        assert!(!u.path(Path::new("/w/a.tmp")));
    }
}
