//! `kiroku export --case NAME [search filters] --out DIR`: a case bundle
//! (see `integrity/export.rs` for its layout) streamed from the collector
//! and written into an empty directory, then checked; `kiroku
//! verify-bundle DIR --ca ca.pem`: a bundle checked offline with the CA
//! certificate alone.
//!
//! Invariant: the writer creates files only below DIR, only at paths
//! `layout::check_path` accepts, never through a symlink and never over
//! an existing file; when the export fails, what it created is removed.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use kiroku_collector::integrity::export::{self, layout};
use kiroku_common::quote::terminal;
use kiroku_proto::{ExportCaseChunk, ExportCaseRequest};
use tokio_stream::StreamExt;

use crate::client::ConnectArgs;
use crate::filters::{SearchArgs, search_request};
use crate::output;
use crate::zone::Zone;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The case name, recorded in the bundle's manifest and the audit log.
    #[arg(long = "case")]
    case: String,
    /// Why the bundle is made, recorded with it.
    #[arg(long, default_value = "")]
    reason: String,
    /// The directory to write the bundle into: a new one, or an empty one.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    filter: SearchArgs,
}

#[derive(clap::Args, Debug)]
pub struct VerifyBundleArgs {
    /// The bundle directory.
    dir: PathBuf,
    /// The CA certificate (PEM) of the time-stamping authority, to check
    /// the checkpoints' RFC 3161 time stamps too.
    #[arg(long, value_name = "PEM")]
    tsa_ca: Option<PathBuf>,
}

/// Exit status when a bundle check finds anything wrong.
const CHECK_FAILED: i32 = 3;

pub async fn export(connect: &ConnectArgs, a: ExportArgs, zone: &Zone) -> anyhow::Result<()> {
    let filter = search_request(a.filter, zone)?;
    let mut out = BundleWriter::create(&a.out)?;
    let req = ExportCaseRequest {
        case_name: a.case,
        filter: Some(filter),
        reason: a.reason,
    };
    let written = async {
        let mut q = connect.query().await?;
        let mut stream = q.export_case(req).await?.into_inner();
        while let Some(chunk) = stream.next().await {
            out.chunk(chunk?)?;
        }
        out.finish()
    }
    .await;
    if let Err(e) = written {
        out.remove_all();
        return Err(e.context(format!(
            "the export into {} failed; nothing was kept",
            a.out.display()
        )));
    }
    out.progress_done();
    eprintln!(
        "wrote {} ({}) into {}",
        output::count(out.files.len() as u64, "file", "files"),
        output::count(out.bytes, "byte", "bytes"),
        a.out.display()
    );
    // The bundle is checked as its recipient will check it, with the CA
    // this CLI trusts.
    match ca_file(connect) {
        Ok(ca) => report(&a.out, &ca, None),
        Err(e) => {
            eprintln!("not checked: {e:#}");
            Ok(())
        }
    }
}

pub fn verify_bundle(connect: &ConnectArgs, a: VerifyBundleArgs) -> anyhow::Result<()> {
    let ca = ca_file(connect)?;
    report(&a.dir, &ca, a.tsa_ca.as_deref())
}

/// The CA certificate: `--ca` (or `KIROKU_CA`), else the CLI config's.
fn ca_file(connect: &ConnectArgs) -> anyhow::Result<PathBuf> {
    if let Some(ca) = &connect.ca {
        return Ok(ca.clone());
    }
    connect.config_file()?.map(|c| c.tls.ca).context(
        "no CA certificate given: use --ca ca.pem (the CA of the collector that made the bundle)",
    )
}

/// Checks the bundle, prints every finding and a summary; exits with
/// status 3 when anything is wrong.
fn report(dir: &Path, ca: &Path, tsa_ca: Option<&Path>) -> anyhow::Result<()> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).with_context(|| format!("cannot read the {what} {}", p.display()))
    };
    let ca_pem = read(ca, "CA certificate")?;
    let tsa_pem = tsa_ca.map(|p| read(p, "TSA CA certificate")).transpose()?;
    let r = export::check_bundle(dir, &ca_pem, tsa_pem.as_deref())
        .with_context(|| format!("cannot check the bundle {}", dir.display()))?;
    for f in &r.findings {
        println!(
            "{}: {}: {}",
            f.what.to_uppercase(),
            terminal(&f.path),
            terminal(&f.detail)
        );
    }
    let case = r
        .manifest
        .as_ref()
        .map(|m| {
            format!(
                "case {} exported by {} from {} at {}",
                terminal(&m.case),
                terminal(&m.exporter),
                terminal(&m.collector),
                terminal(&m.exported_at)
            )
        })
        .unwrap_or_else(|| "no readable manifest".into());
    let summary = format!(
        "{case}: {}, {}, {} proven in {}, {}; signed by {}",
        output::count(r.files as u64, "file", "files"),
        output::count(r.events as u64, "event", "events"),
        r.proven,
        output::count(r.checkpoints as u64, "checkpoint", "checkpoints"),
        output::count(r.audit_entries as u64, "audit entry", "audit entries"),
        r.signer
            .as_deref()
            .map(terminal)
            .unwrap_or("nobody verified".into()),
    );
    if r.unchecked_timestamps > 0 {
        eprintln!(
            "{} not checked: give --tsa-ca (the time-stamping authority's CA certificate)",
            output::count(r.unchecked_timestamps as u64, "time stamp", "time stamps")
        );
    }
    if r.ok() {
        println!("BUNDLE INTACT: {summary}");
        return Ok(());
    }
    println!(
        "BUNDLE NOT INTACT ({}): {summary}",
        output::count(r.findings.len() as u64, "finding", "findings")
    );
    std::process::exit(CHECK_FAILED);
}

/// Writes a bundle's chunks below one directory (see the module's
/// invariant).
struct BundleWriter {
    root: PathBuf,
    /// The root itself, when this writer made it.
    made_root: bool,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
    open: Option<(String, std::fs::File)>,
    bytes: u64,
    shown_progress: bool,
}

impl BundleWriter {
    /// Takes `root`: a new directory (its parent must exist), or an
    /// existing empty one; anything else is refused.
    fn create(root: &Path) -> anyhow::Result<BundleWriter> {
        let made_root = match std::fs::symlink_metadata(root) {
            Ok(m) if m.is_dir() => {
                let mut entries = std::fs::read_dir(root)
                    .with_context(|| format!("cannot read {}", root.display()))?;
                if entries.next().is_some() {
                    anyhow::bail!(
                        "{} is not empty: a bundle is written into a new or empty directory",
                        root.display()
                    );
                }
                false
            }
            Ok(_) => anyhow::bail!(
                "{} exists and is not a directory (a symlink is refused too)",
                root.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(root)
                    .with_context(|| format!("cannot create {}", root.display()))?;
                true
            }
            Err(e) => return Err(e).with_context(|| format!("cannot use {}", root.display())),
        };
        Ok(BundleWriter {
            root: root.to_owned(),
            made_root,
            dirs: Vec::new(),
            files: Vec::new(),
            open: None,
            bytes: 0,
            shown_progress: false,
        })
    }

    fn chunk(&mut self, c: ExportCaseChunk) -> anyhow::Result<()> {
        if let Some(p) = &c.progress {
            self.progress(p);
        }
        if c.path.is_empty() {
            anyhow::ensure!(
                c.data.is_empty(),
                "the collector sent data without a file name"
            );
            return Ok(());
        }
        let same = self.open.as_ref().is_some_and(|(p, _)| *p == c.path);
        if !same {
            if let Some((p, _)) = &self.open {
                anyhow::bail!(
                    "the collector began {} before it ended {}",
                    terminal(&c.path),
                    terminal(p)
                );
            }
            let file = self.new_file(&c.path)?;
            self.open = Some((c.path.clone(), file));
        }
        let Some((path, file)) = self.open.as_mut() else {
            anyhow::bail!("no file open");
        };
        file.write_all(&c.data)
            .with_context(|| format!("cannot write {}", terminal(path)))?;
        self.bytes += c.data.len() as u64;
        if c.end_of_file {
            // Made durable all at once in `finish` (one syncfs): an fsync
            // per file cost about five per event and held a day's export
            // to some 25 events a second.
            self.open = None;
        }
        Ok(())
    }

    /// A new file at a checked path, its directories made below the root
    /// one by one (an existing one must be a real directory).
    fn new_file(&mut self, rel: &str) -> anyhow::Result<std::fs::File> {
        layout::check_path(rel).context("the collector sent a file name that is not allowed")?;
        let parts: Vec<&str> = rel.split('/').collect();
        let mut at = self.root.clone();
        for dir in &parts[..parts.len() - 1] {
            at.push(dir);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => anyhow::bail!("{} is in the way (not a directory)", at.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&at)
                        .with_context(|| format!("cannot create {}", at.display()))?;
                    self.dirs.push(at.clone());
                }
                Err(e) => return Err(e).with_context(|| format!("cannot use {}", at.display())),
            }
        }
        at.push(parts[parts.len() - 1]);
        // create_new fails on anything already there, a symlink included.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&at)
            .with_context(|| {
                format!(
                    "cannot create {} (sent twice, or something is in the way)",
                    at.display()
                )
            })?;
        self.files.push(at);
        Ok(file)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some((p, _)) = &self.open {
            anyhow::bail!("the stream ended in the middle of {}", terminal(p));
        }
        anyhow::ensure!(
            self.files.iter().any(|f| f.ends_with(layout::MANIFEST)),
            "the collector sent no manifest"
        );
        // Every file and directory of the bundle is on the root's file
        // system: one syncfs makes them all durable, then the root's own
        // entry is synced.
        let root = std::fs::File::open(&self.root)
            .with_context(|| format!("cannot open {}", self.root.display()))?;
        rustix::fs::syncfs(&root)
            .map_err(std::io::Error::from)
            .and_then(|()| root.sync_all())
            .with_context(|| format!("cannot sync {}", self.root.display()))?;
        Ok(())
    }

    /// Removes every file and directory this writer made.
    fn remove_all(&mut self) {
        self.open = None;
        for f in self.files.drain(..).rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
        if self.made_root {
            let _ = std::fs::remove_dir(&self.root);
        }
        self.progress_done();
    }

    fn progress(&mut self, p: &kiroku_proto::VerifyProgress) {
        if std::io::stderr().is_terminal() {
            eprint!(
                "\r{}: {}/{}, {}   ",
                terminal(&p.phase),
                p.done,
                p.total,
                crate::investigate::human_bytes(p.bytes)
            );
            self.shown_progress = true;
        }
    }

    fn progress_done(&mut self) {
        if std::mem::take(&mut self.shown_progress) {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(path: &str, data: &[u8], end: bool) -> ExportCaseChunk {
        ExportCaseChunk {
            path: path.into(),
            data: data.to_vec(),
            end_of_file: end,
            progress: None,
        }
    }

    #[test]
    fn writes_below_the_root_only() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("case");
        let mut w = BundleWriter::create(&root).expect("new dir");
        w.chunk(chunk("events/h/s/1.json", b"{", false))
            .expect("part");
        w.chunk(chunk("events/h/s/1.json", b"}", true))
            .expect("end");
        w.chunk(chunk("manifest.json", b"{}", true))
            .expect("manifest");
        w.finish().expect("finish");
        assert_eq!(
            std::fs::read(root.join("events/h/s/1.json")).expect("read"),
            b"{}"
        );
        for bad in ["../x", "/etc/x", "a/../../x", ".hidden", "a//b"] {
            assert!(w.chunk(chunk(bad, b"x", true)).is_err(), "{bad}");
        }
        assert!(
            w.chunk(chunk("manifest.json", b"again", true)).is_err(),
            "twice"
        );
        assert!(!tmp.path().join("x").exists());
        // Not empty now: refused.
        assert!(BundleWriter::create(&root).is_err());
    }

    #[test]
    fn refuses_interleaving_symlinks_and_cleans_up() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("case");
        std::fs::create_dir(&root).expect("mkdir");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        let mut w = BundleWriter::create(&root).expect("empty dir");
        // A symlink planted after the check is not followed.
        std::os::unix::fs::symlink(&outside, root.join("mail")).expect("symlink");
        assert!(w.chunk(chunk("mail/a.eml", b"x", true)).is_err());
        std::fs::remove_file(root.join("mail")).expect("rm");
        w.chunk(chunk("a/b", b"x", false)).expect("open");
        assert!(w.chunk(chunk("a/c", b"x", true)).is_err(), "interleaved");
        assert!(w.finish().is_err(), "ends mid-file");
        w.remove_all();
        assert_eq!(std::fs::read_dir(&root).expect("read").count(), 0);
        assert_eq!(std::fs::read_dir(&outside).expect("read").count(), 0);
        // A file, or a symlink, is not a bundle directory.
        std::os::unix::fs::symlink(&outside, tmp.path().join("link")).expect("symlink");
        assert!(BundleWriter::create(&tmp.path().join("link")).is_err());
    }
}
