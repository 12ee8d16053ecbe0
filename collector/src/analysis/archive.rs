//! Listing the files inside a mailed archive: ZIP, 7z, gzip and tar, one
//! archive inside another to a bounded depth.
//!
//! For every member the listing records its path inside the attachment
//! (joined with `/`: `inner.zip/docs/a.xlsx`), its size, the SHA-256 of its
//! content and its real type, so that `kiroku trace` and the sensitive-hash
//! rules find a confidential file that was zipped before it was mailed.
//! Encrypted archives (ZipCrypto or AES ZIP, 7z AES) are listed by name
//! where the format lists names without the password (ZIP always; 7z unless
//! its header is encrypted too, `7z a -mhe=on`), and say which encryption
//! they use: that is what the `encrypted_attachment` and `ppap` alerts
//! (`ppap.rs`) look at.
//!
//! Architecture invariant: listing is bounded work whatever the bytes are.
//! [`ArchiveLimits`] bounds the nesting depth, the members listed, the bytes
//! expanded (counted as they are decompressed, never trusted from a
//! header), the size of a nested archive held in memory to open it, the 7z
//! decoder's dictionary memory, and the wall time. A zip bomb, a 42.zip
//! style nest or a single highly compressed member stops at the first bound
//! it reaches; the listing keeps what was read and says in `status` which
//! bound cut it (the dispatcher tags the attachment `archive-bounded`).
//! Nothing here panics on hostile input or writes anything anywhere.
//!
//! OOXML and ODF files (docx, xlsx, pptx, odt...) are ZIP files by format
//! but documents by meaning: they are listed like any ZIP (an extra
//! `[Content_Types].xml` must not hide an encrypted archive's members, and
//! a document's embedded files are mailed files too), with the container
//! labelled "document" unless an entry is encrypted.
//!
//! A ZIP is recognised by its first bytes or by its end-of-central-directory
//! record near its end (bytes prepended: a self-extractor, a script, a
//! polyglot), as `unzip`, 7-Zip and the `zip` crate open it.

mod sevenz;
mod stream;
mod zipfile;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, Instant};

use kiroku_proto::ArchiveMember;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How much work one attachment's listing may take (`[analysis.archives]`
/// in the collector config; every key has a default).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveLimits {
    /// Archives inside archives are opened down to this depth (1: only the
    /// attachment's own members).
    pub max_depth: u32,
    /// Members listed per attachment, nested ones included.
    pub max_members: usize,
    /// Bytes decompressed per attachment, nested ones included.
    pub max_expanded_bytes: u64,
    /// A nested archive is held in memory to be opened; one larger than
    /// this is hashed and listed as a member but not opened.
    pub max_nested_bytes: u64,
    /// Wall time per attachment, milliseconds.
    pub max_millis: u64,
    /// The 7z decoder's dictionary memory, KiB (a 7z can ask for 4 GiB).
    pub max_7z_memory_kib: usize,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_depth: 4,
            max_members: 20_000,
            max_expanded_bytes: 1 << 30,
            max_nested_bytes: 64 << 20,
            max_millis: 10_000,
            max_7z_memory_kib: 256 << 10,
        }
    }
}

/// What [`list`] found in one attachment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// "zip", "7z", "tar" or "gzip" (a gzip holding a tar is "tar");
    /// "document" for an OOXML or ODF document (a ZIP without encrypted
    /// entries whose members say it is one; its members are listed too).
    pub container: String,
    /// Some member, at any depth, is encrypted, or the names are.
    pub encrypted: bool,
    /// Which encryption, joined with "; " when there are several:
    /// "zipcrypto", "aes-128", "aes-192", "aes-256", "7z-aes",
    /// "7z-aes, names hidden".
    pub encryption: String,
    /// Every file found, depth first (an archive member before its own
    /// members). Directories are not listed.
    pub members: Vec<ArchiveMember>,
    /// Empty when everything was read; otherwise why not, joined with "; ":
    /// "bounded: ..." (a limit of [`ArchiveLimits`] cut the work: a zip
    /// bomb or a very large archive), "names hidden: ...", "damaged: ...".
    pub status: String,
}

impl Listing {
    /// A limit cut the listing: the attachment is tagged `archive-bounded`.
    pub fn is_bounded(&self) -> bool {
        is_bounded(&self.status)
    }
}

/// Whether a listing's status (as kept in `members_status`) says a limit
/// cut it, rather than damage or hidden names.
pub fn is_bounded(status: &str) -> bool {
    status
        .split("; ")
        .any(|s| s.starts_with(BOUNDED) || s.starts_with("cut at depth"))
}

const BOUNDED: &str = "bounded:";

/// Lists the archive `data` (an attachment named `name`). `None`: not an
/// archive.
pub fn list(data: &[u8], name: &str, limits: &ArchiveLimits) -> Option<Listing> {
    let container = container_of(data).or_else(|| zip_by_tail(data))?;
    let mut walk = Walk::new(limits);
    let opened = walk.open(container, data, name, "", 1);
    if opened == Opened::NotArchive {
        return None;
    }
    Some(walk.finish(opened))
}

/// A ZIP's end-of-central-directory record is in its last 22 bytes plus
/// at most a 64 KiB comment.
const EOCD_SEARCH: usize = 22 + 0xFFFF;

/// A ZIP recognised by its end-of-central-directory record only (its first
/// bytes are something else): opened leniently, see [`Container::ZipTail`].
fn zip_by_tail(data: &[u8]) -> Option<Container> {
    let tail = &data[data.len().saturating_sub(EOCD_SEARCH)..];
    memchr::memmem::rfind(tail, b"PK\x05\x06").map(|_| Container::ZipTail)
}

/// The container format the bytes start with, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Zip,
    /// Bytes that end like a ZIP but do not start like one; when the `zip`
    /// crate cannot open them they are no archive (not a damaged one).
    ZipTail,
    SevenZ,
    Gzip,
    Tar,
}

fn container_of(head: &[u8]) -> Option<Container> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Container::Zip)
    } else if head.starts_with(b"7z\xBC\xAF\x27\x1C") {
        Some(Container::SevenZ)
    } else if head.starts_with(b"\x1F\x8B") {
        Some(Container::Gzip)
    } else if is_tar(head) {
        Some(Container::Tar)
    } else {
        None
    }
}

/// A POSIX (ustar) or GNU tar header: the magic at offset 257.
fn is_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar")
}

/// What opening one container gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Opened {
    /// Listed (maybe partly: the walk's notes say why): its format name.
    Listed(&'static str),
    /// Not an archive after all (a [`Container::ZipTail`] that does not
    /// open).
    NotArchive,
}

/// One attachment's listing in progress: the members found so far and the
/// shared bounds of all its nested containers.
struct Walk<'a> {
    limits: &'a ArchiveLimits,
    deadline: Instant,
    expanded: u64,
    members: Vec<ArchiveMember>,
    encryption: BTreeSet<String>,
    /// Why the listing is incomplete, in the order found, without repeats.
    notes: Vec<String>,
    /// A bound was reached: list nothing more.
    stopped: bool,
}

/// What reading one member's content gave.
struct MemberRead {
    /// Bytes read (all of them when `cut` is None).
    size: u64,
    sha256: String,
    /// Its first bytes, for the type and the nested-container check.
    head: Vec<u8>,
    /// The whole content, kept when it is a container to open.
    kept: Option<Vec<u8>>,
    /// Why the content was not read to its end.
    cut: Option<String>,
}

const HEAD_BYTES: usize = 8192;
const CHUNK: usize = 64 * 1024;

impl<'a> Walk<'a> {
    fn new(limits: &'a ArchiveLimits) -> Walk<'a> {
        Walk {
            limits,
            deadline: Instant::now() + Duration::from_millis(limits.max_millis),
            expanded: 0,
            members: Vec::new(),
            encryption: BTreeSet::new(),
            notes: Vec::new(),
            stopped: false,
        }
    }

    fn finish(self, opened: Opened) -> Listing {
        let container = match opened {
            Opened::Listed(c) => c,
            Opened::NotArchive => "",
        };
        Listing {
            container: container.into(),
            encrypted: !self.encryption.is_empty(),
            encryption: self.encryption.into_iter().collect::<Vec<_>>().join("; "),
            members: self.members,
            status: self.notes.join("; "),
        }
    }

    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Stops the walk because a bound was reached.
    fn bound(&mut self, what: String) {
        self.stopped = true;
        self.note(format!("{BOUNDED} {what}; zip bomb?"));
    }

    /// Whether another member may be listed; notes the bound if not.
    fn may_list(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        if self.members.len() >= self.limits.max_members {
            self.bound(format!("{} members listed", self.limits.max_members));
            return false;
        }
        if Instant::now() >= self.deadline {
            self.bound(format!("{} ms spent", self.limits.max_millis));
            return false;
        }
        true
    }

    /// Opens `data`, a `container`, whose members are listed under
    /// `prefix` at `depth`.
    fn open(
        &mut self,
        container: Container,
        data: &[u8],
        name: &str,
        prefix: &str,
        depth: u32,
    ) -> Opened {
        match container {
            Container::Zip => zipfile::list(self, data, prefix, depth, false),
            Container::ZipTail => zipfile::list(self, data, prefix, depth, true),
            Container::SevenZ => sevenz::list(self, data, prefix, depth),
            Container::Gzip => stream::gzip(self, data, name, prefix, depth),
            Container::Tar => stream::tar(self, std::io::Cursor::new(data), prefix, depth, true).0,
        }
    }

    /// Lists a member whose content was not read (encrypted, unreadable).
    fn unread(&mut self, path: String, size: u64, depth: u32, encrypted: bool, status: &str) {
        self.members.push(ArchiveMember {
            path,
            size,
            sha256: String::new(),
            detected_type: String::new(),
            encrypted,
            depth,
            status: status.into(),
        });
    }

    /// Reads a member's content from `r` (`declared`: its size as listed,
    /// 0 when unknown), lists it, and opens it when it is an archive.
    /// `metered`: count the bytes against the expanded bound (false when
    /// the stream `r` comes from is counted already).
    fn member(&mut self, path: String, declared: u64, depth: u32, r: &mut dyn Read, metered: bool) {
        let read = self.read_member(r, depth, metered);
        let status = read.cut.clone().unwrap_or_default();
        let nested = read.kept.as_deref().and_then(container_of);
        self.members.push(ArchiveMember {
            sha256: if read.cut.is_none() {
                read.sha256
            } else {
                String::new()
            },
            size: if read.cut.is_none() {
                read.size
            } else {
                declared.max(read.size)
            },
            detected_type: detect_type(&read.head),
            encrypted: false,
            depth,
            status,
            path: path.clone(),
        });
        if let (Some(kind), Some(data)) = (nested, read.kept) {
            // A nested document (a docx in a zip) is listed like any ZIP:
            // its embedded files are mailed files too.
            self.open(kind, &data, &path, &format!("{path}/"), depth + 1);
        }
    }

    /// Hashes `r` to its end, within the bounds; keeps the bytes when they
    /// start like a container that may still be opened at this depth.
    fn read_member(&mut self, r: &mut dyn Read, depth: u32, metered: bool) -> MemberRead {
        let mut sha = Sha256::new();
        let mut out = MemberRead {
            size: 0,
            sha256: String::new(),
            head: Vec::new(),
            kept: None,
            cut: None,
        };
        let mut keep: Option<Vec<u8>> = None;
        let mut decided = false;
        let mut buf = vec![0u8; CHUNK];
        loop {
            if Instant::now() >= self.deadline {
                self.bound(format!("{} ms spent", self.limits.max_millis));
                out.cut = Some("not read to its end: time bound".into());
                break;
            }
            // Until the head is long enough to tell a container, read only
            // up to it, so that the head is every byte read so far and can
            // start the kept copy.
            let want = if decided { CHUNK } else { 512 - out.head.len() };
            let n = match r.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    out.cut = Some(match stream::bound_hit(&e) {
                        Some(what) => format!("not read to its end: {what} bound"),
                        None => format!("damaged: {e}"),
                    });
                    break;
                }
            };
            let chunk = &buf[..n];
            if metered {
                let room = self.limits.max_expanded_bytes.saturating_sub(self.expanded);
                if n as u64 > room {
                    self.expanded = self.limits.max_expanded_bytes;
                    self.bound(format!(
                        "{} expanded",
                        human_bytes(self.limits.max_expanded_bytes)
                    ));
                    out.cut = Some("not read to its end: expanded-size bound".into());
                    break;
                }
                self.expanded += n as u64;
            }
            sha.update(chunk);
            out.size += n as u64;
            if out.head.len() < HEAD_BYTES {
                let take = (HEAD_BYTES - out.head.len()).min(n);
                out.head.extend_from_slice(&chunk[..take]);
            }
            if let Some(k) = keep.as_mut() {
                if out.size > self.limits.max_nested_bytes {
                    keep = None;
                    self.note(format!(
                        "{BOUNDED} a nested archive larger than {} not opened",
                        human_bytes(self.limits.max_nested_bytes)
                    ));
                } else {
                    k.extend_from_slice(chunk);
                }
            }
            // Enough of the head is there to tell a container (a tar's
            // magic is at 257) once 512 bytes or the end are read.
            if !decided && out.head.len() >= 512 {
                decided = true;
                keep = self.start_keeping(&out.head, depth);
            }
        }
        if !decided && out.cut.is_none() {
            keep = self.start_keeping(&out.head, depth);
        }
        if out.cut.is_none() {
            out.sha256 = hex::encode(sha.finalize());
            out.kept = keep;
        }
        out
    }

    /// The buffer to keep a member in when its head says it is a container
    /// that may be opened at `depth + 1`.
    fn start_keeping(&mut self, head: &[u8], depth: u32) -> Option<Vec<u8>> {
        container_of(head)?;
        if depth >= self.limits.max_depth {
            self.note(format!(
                "{BOUNDED} archives nested deeper than {} not opened",
                self.limits.max_depth
            ));
            return None;
        }
        Some(head.to_vec())
    }
}

/// A member's type from its first bytes, as the collector types every
/// file (analysis/types.rs).
fn detect_type(head: &[u8]) -> String {
    super::types::detect(head).to_owned()
}

/// "1 GiB", "64 MiB", "512 KiB" or bytes, for statuses.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// "in a.zip/: " naming a nested archive in a status, nothing at the top.
fn at(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("in {prefix}: ")
    }
}
