//! gzip and tar: formats read front to back. A gzip holds one file (listed
//! under its stored name, else the attachment's name without `.gz`); a
//! gzip holding a tar (`.tar.gz`, `.tgz`) is listed as the tar.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use std::time::Instant;

use flate2::read::MultiGzDecoder;

use super::{Opened, Walk, at, human_bytes, is_tar};

/// Which bound a [`Metered`] reader hit: the error it returns then.
#[derive(Debug)]
struct BoundHit(&'static str);

impl std::fmt::Display for BoundHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} bound was reached", self.0)
    }
}

impl std::error::Error for BoundHit {}

/// The bound a read error stands for, when it is a [`Metered`] reader's.
pub(super) fn bound_hit(e: &io::Error) -> Option<&'static str> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<BoundHit>())
        .map(|b| b.0)
}

/// Counts the bytes a decompressor gives against the walk's expanded bound
/// and deadline, for a container (a gzipped tar) whose members are read
/// from the same stream: they are counted here once, not again per member.
struct Metered<R> {
    inner: R,
    room: u64,
    used: u64,
    deadline: Instant,
    hit: Option<&'static str>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(what) = self.hit {
            return Err(io::Error::other(BoundHit(what)));
        }
        if Instant::now() >= self.deadline {
            self.hit = Some("time");
            return Err(io::Error::other(BoundHit("time")));
        }
        let n = self.inner.read(buf)?;
        self.used += n as u64;
        if self.used > self.room {
            self.hit = Some("expanded-size");
            return Err(io::Error::other(BoundHit("expanded-size")));
        }
        Ok(n)
    }
}

impl Walk<'_> {
    fn metered<R: Read>(&self, inner: R) -> Metered<R> {
        Metered {
            inner,
            room: self.limits.max_expanded_bytes.saturating_sub(self.expanded),
            used: 0,
            deadline: self.deadline,
            hit: None,
        }
    }

    /// Takes a [`Metered`] reader's count and bound into the walk.
    fn settle<R>(&mut self, m: &Metered<R>) {
        self.expanded = self.expanded.saturating_add(m.used);
        match m.hit {
            Some("time") => self.bound(format!("{} ms spent", self.limits.max_millis)),
            Some(_) => self.bound(format!(
                "{} expanded",
                human_bytes(self.limits.max_expanded_bytes)
            )),
            None => {}
        }
    }
}

pub(super) fn gzip(walk: &mut Walk, data: &[u8], name: &str, prefix: &str, depth: u32) -> Opened {
    let mut gz = MultiGzDecoder::new(data);
    // The first 512 bytes tell a tar; they are counted with the rest.
    let mut head = Vec::with_capacity(512);
    let mut metered = walk.metered(&mut gz);
    let got = (&mut metered).take(512).read_to_end(&mut head);
    let stored_name = metered
        .inner
        .header()
        .and_then(|h| h.filename())
        .map(|n| String::from_utf8_lossy(n).into_owned());
    if let Err(e) = got {
        walk.settle(&metered);
        if bound_hit(&e).is_none() {
            walk.note(format!("damaged: {}gzip: {e}", at(prefix)));
        }
        return Opened::Listed("gzip");
    }
    if is_tar(&head) {
        let joined = io::Cursor::new(head).chain(metered);
        let (opened, joined) = tar(walk, joined, prefix, depth, false);
        walk.settle(&joined.into_inner().1);
        return opened;
    }
    let inner_name = stored_name
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .unwrap_or_else(|| ungzipped_name(name));
    let mut joined = io::Cursor::new(head).chain(metered);
    walk.member(
        format!("{prefix}{inner_name}"),
        0,
        depth,
        &mut joined,
        false,
    );
    let (_, metered) = joined.into_inner();
    walk.settle(&metered);
    Opened::Listed("gzip")
}

/// The name of the file a gzip named `name` holds.
fn ungzipped_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix(".tgz").map(|_| &base[..base.len() - 4]) {
        format!("{stem}.tar")
    } else if lower.ends_with(".gz") {
        base[..base.len() - 3].to_owned()
    } else if base.is_empty() {
        "content".to_owned()
    } else {
        base.to_owned()
    }
}

/// Bytes a tar may take between two members' contents: headers, GNU
/// long names and links, PAX extensions and padding. The `tar` crate reads
/// a long name or PAX entry whole into memory (`read_all`), as large as its
/// header declares: a `.tar.gz` whose `L` entry declares 1 GiB of zeros
/// would be held in memory. Real ones are a few KiB.
pub(super) const TAR_HEADER_BYTES: u64 = 1 << 20;

/// What [`Gap`] and the walk share: whether a member's content is being
/// read, and the bytes read since the last member's content.
#[derive(Default)]
struct GapState {
    in_member: Cell<bool>,
    used: Cell<u64>,
}

/// Bounds what the `tar` crate reads outside a member's content (headers
/// and extension data, see [`TAR_HEADER_BYTES`]); member contents are
/// metered by the walk as usual.
struct Gap<R> {
    inner: R,
    state: Rc<GapState>,
}

impl<R: Read> Read for Gap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.in_member.get() {
            return self.inner.read(buf);
        }
        let room = TAR_HEADER_BYTES.saturating_sub(self.state.used.get());
        if room == 0 {
            return Err(io::Error::other(BoundHit(TAR_HEADER)));
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.state.used.set(self.state.used.get() + n as u64);
        Ok(n)
    }
}

/// The [`BoundHit`] of [`Gap`].
const TAR_HEADER: &str = "tar header";

/// Lists a tar read from `source`, and gives `source` back. `meter`:
/// `source` is the raw tar, whose members are counted as they are read;
/// otherwise a [`Metered`] stream below counts them already.
pub(super) fn tar<R: Read>(
    walk: &mut Walk,
    source: R,
    prefix: &str,
    depth: u32,
    meter: bool,
) -> (Opened, R) {
    let state = Rc::new(GapState::default());
    let mut archive = tar::Archive::new(Gap {
        inner: source,
        state: state.clone(),
    });
    list_tar(walk, &mut archive, &state, prefix, depth, meter);
    (Opened::Listed("tar"), archive.into_inner().inner)
}

fn list_tar<R: Read>(
    walk: &mut Walk,
    archive: &mut tar::Archive<Gap<R>>,
    gap: &GapState,
    prefix: &str,
    depth: u32,
    meter: bool,
) {
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            walk.note(format!("damaged: {}tar: {e}", at(prefix)));
            return;
        }
    };
    for entry in entries {
        if !walk.may_list() {
            break;
        }
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                match bound_hit(&e) {
                    Some(TAR_HEADER) => walk.bound(format!(
                        "{}tar header or extension data over {}",
                        at(prefix),
                        human_bytes(TAR_HEADER_BYTES)
                    )),
                    Some(_) => {}
                    None => walk.note(format!("damaged: {}tar: {e}", at(prefix))),
                }
                break;
            }
        };
        // From here to the next header the bytes are this entry's content:
        // metered as content, not as header.
        gap.in_member.set(true);
        if entry.header().entry_type().is_file() {
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let size = entry.size();
            walk.member(format!("{prefix}{path}"), size, depth, &mut entry, meter);
        } else {
            // Not a file (a directory, link, sparse file...): its content,
            // if any, is read past here as content, so that the `tar`
            // crate's skip does not count against the header bound.
            let drained = io::copy(&mut (&mut entry).take(u64::MAX), &mut io::sink());
            if let Err(e) = drained
                && bound_hit(&e).is_none()
            {
                walk.note(format!("damaged: {}tar: {e}", at(prefix)));
            }
        }
        gap.in_member.set(false);
        gap.used.set(0);
    }
}
