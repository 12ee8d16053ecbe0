//! Where an attachment's bytes come from: its own blob (only the head of
//! one over the file limit), else the leaf of the raw message, walked
//! streaming once per mail.

use std::collections::BTreeSet;

use super::Run;
use super::read::{self, Content, Walked};

impl Run<'_> {
    /// The raw message walked, streamed: the attachments that are not
    /// blobs of their own, attached mail and S/MIME/PGP parts kept (each
    /// up to the file limit); empty when it cannot be read (each
    /// attachment's status then says so).
    pub(super) fn walk_raw(&mut self, m: &kiroku_proto::EmailEvent) -> Walked {
        let needed: BTreeSet<&str> = m
            .attachments
            .iter()
            .map(|a| a.sha256.as_str())
            .filter(|s| !self.blobs.has(s))
            .collect();
        let walked = self
            .blobs
            .reader(&m.raw_sha256)
            .map_err(std::io::Error::other)
            .and_then(|r| {
                read::walk(
                    std::io::BufReader::with_capacity(256 * 1024, r),
                    self.limits.max_file_bytes,
                    // Every attachment its own blob: none is decoded here.
                    !needed.is_empty(),
                    |sha| needed.contains(sha),
                )
            });
        walked.unwrap_or_else(|e| {
            self.out.retry = true;
            tracing::warn!(event_id = %self.out.event_id, raw_sha256 = %m.raw_sha256, error = %e, "the raw message cannot be read for analysis; its attachments are recorded as unreadable");
            Walked::default()
        })
    }

    /// An attachment's bytes: its own blob, else the walked leaf with its
    /// hash. Of a blob the record already says is over the limit only the
    /// head is read (decompressing it whole just to count it is waste).
    pub(super) fn content_of(
        &mut self,
        sha256: &str,
        size: u64,
        walked: &Walked,
    ) -> Option<Content> {
        let max = self.limits.max_file_bytes;
        if size > max && self.blobs.has(sha256) {
            let head = self
                .blobs
                .reader(sha256)
                .map_err(std::io::Error::other)
                .and_then(|r| {
                    let mut head = Vec::new();
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(r, read::HEAD as u64),
                        &mut head,
                    )
                    .map(|_| head)
                });
            match head {
                Ok(head) => return Some(Content::TooLarge { size, head }),
                Err(e) => {
                    self.out.retry = true;
                    tracing::warn!(event_id = %self.out.event_id, sha256, error = %e, "attachment blob not readable for analysis")
                }
            }
        }
        if let Some(r) = read::from_blob(self.blobs, sha256, max) {
            match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    self.out.retry = true;
                    tracing::warn!(event_id = %self.out.event_id, sha256, error = %e, "attachment blob not readable for analysis")
                }
            }
        }
        walked
            .leaves
            .iter()
            .find(|l| l.sha256 == sha256)
            .map(|l| l.content.clone())
    }
}
