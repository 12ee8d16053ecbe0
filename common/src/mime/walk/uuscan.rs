//! Uuencoded files inside decoded text/plain bodies (`begin 644 name` ...
//! `end`), reported as parts of their own while their text part is open,
//! as clients such as Thunderbird show them as attachments.

use sha2::{Digest, Sha256};

use super::super::decode::{self, Uu};
use super::{Ctx, label};
use crate::mime::{Disposition, PartEnd, PartInfo, Visitor};

/// Finds uuencoded blocks in decoded text.
pub(super) struct UuScan {
    parent: String,
    depth: usize,
    line: Vec<u8>,
    /// The current line is too long to be a `begin` or data line.
    overlong: bool,
    found: usize,
    block: Option<UuBlock>,
}

struct UuBlock {
    info: PartInfo,
    want: bool,
    /// Data followed the `begin` line: the block is reported as a part.
    started: bool,
    uu: Uu,
    hasher: Sha256,
    size: u64,
}

/// Longest line looked at for uuencode (data lines are 61 characters).
const UU_SCAN_LINE: usize = 1024;

impl UuScan {
    pub(super) fn new(parent: String, depth: usize) -> UuScan {
        UuScan {
            parent,
            depth,
            line: Vec::new(),
            overlong: false,
            found: 0,
            block: None,
        }
    }

    pub(super) fn feed<V: Visitor>(&mut self, ctx: &mut Ctx<'_, V>, decoded: &[u8]) {
        for &b in decoded {
            if b == b'\n' {
                if !self.overlong {
                    let line = std::mem::take(&mut self.line);
                    self.line_done(ctx, &line);
                    self.line = line;
                }
                self.line.clear();
                self.overlong = false;
            } else if self.line.len() < UU_SCAN_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
    }

    fn line_done<V: Visitor>(&mut self, ctx: &mut Ctx<'_, V>, line: &[u8]) {
        if let Some(b) = self.block.as_mut() {
            let mut out = Vec::new();
            let ok = b.uu.line_done(line, &mut out);
            if !b.started {
                // A `begin` line is a file only when uuencoded data
                // follows it: prose that happens to start with "begin 644"
                // is not reported as an attachment.
                if !ok || b.uu.ended() {
                    self.block = None;
                    return;
                }
                if out.is_empty() {
                    return;
                }
                self.found += 1;
                b.info.path = format!("{}.u{}", self.parent, self.found);
                let who = label(&b.info);
                let Some(index) = ctx.take_index(&who) else {
                    self.block = None;
                    return;
                };
                b.info.index = index;
                b.want = ctx.v.part_start(&b.info);
                b.started = true;
            }
            if !out.is_empty() {
                b.hasher.update(&out);
                b.size += out.len() as u64;
                if b.want {
                    ctx.v.body(&b.info, &out);
                }
            }
            if b.uu.ended() || !ok {
                self.end_block(ctx);
            }
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(name) = decode::begin_line(line) {
            let info = PartInfo {
                index: 0,
                path: String::new(),
                depth: self.depth,
                headers: Vec::new(),
                content_type: "application/octet-stream".into(),
                charset: String::new(),
                disposition: Disposition::Attachment,
                filename: Some(name.clone()),
                name_candidates: vec![name],
                transfer_encoding: "uuencode".into(),
                is_attachment: true,
                embedded: true,
            };
            self.block = Some(UuBlock {
                info,
                want: false,
                started: false,
                uu: Uu::new(false),
                hasher: Sha256::new(),
                size: 0,
            });
        }
    }

    fn end_block<V: Visitor>(&mut self, ctx: &mut Ctx<'_, V>) {
        let Some(mut b) = self.block.take() else {
            return;
        };
        if !b.started {
            return;
        }
        let mut notes = Vec::new();
        let mut out = Vec::new();
        b.uu.finish(&mut out, &mut notes);
        let who = label(&b.info);
        ctx.warn(format!("{who}: uuencoded file inside a text part decoded"));
        for n in notes {
            ctx.warn(format!("{who}: {n}"));
        }
        let end = PartEnd {
            decoded: true,
            size: b.size,
            sha256: hex::encode(b.hasher.finalize()),
        };
        ctx.v.part_end(&b.info, &end);
        ctx.out.parts.push((b.info, end));
    }

    pub(super) fn finish<V: Visitor>(mut self, ctx: &mut Ctx<'_, V>) {
        if !self.line.is_empty() && !self.overlong {
            let line = std::mem::take(&mut self.line);
            self.line_done(ctx, &line);
        }
        self.end_block(ctx);
    }
}
