//! TNEF (`winmail.dat`, `application/ms-tnef`): the attachments Outlook
//! and Exchange wrap in one opaque file, unpacked so each is recorded as
//! if attached directly.
//!
//! Written here rather than taken from a crate: the `tnef` crate (0.1.1,
//! 2018) is unmaintained and reads no MAPI properties (so no long file
//! names), and `ytnef` binds a C library. The part of the format needed to
//! list attachments is small ([MS-OXTNEF]):
//!
//! ```text
//! u32 LE signature 0x223E9F78 | u16 LE key | attribute*
//! attribute = u8 level (1 message, 2 attachment) | u32 LE id (low 16 bits:
//!             the attribute, high 16 bits: its type) | u32 LE length |
//!             data[length] | u16 LE checksum (sum of the data bytes)
//! ```
//!
//! An attachment begins with `attAttachRendData` (0x9002); its bytes are
//! in `attAttachData` (0x800F), its 8.3 name in `attAttachTitle` (0x8010),
//! and its MAPI properties in `attAttachment` (0x9005), among them
//! `PR_ATTACH_LONG_FILENAME` (0x3707), the name a mail client shows.
//! Strings in 8-bit properties are in the message's code page
//! (`attOemCodepage`, 0x9007), CP932 for Japanese Outlook.
//!
//! Lenient like the mail clients: a wrong checksum is counted, not fatal;
//! damage ends the walk and keeps what was read before it (`status` says
//! so). Bounded by the input: nothing is allocated beyond its length.

/// The first four bytes of every TNEF stream (0x223E9F78 little-endian).
pub const SIGNATURE: [u8; 4] = [0x78, 0x9f, 0x3e, 0x22];

const LVL_ATTACHMENT: u8 = 2;
const ATT_ATTACH_DATA: u16 = 0x800f;
const ATT_ATTACH_TITLE: u16 = 0x8010;
const ATT_ATTACH_REND_DATA: u16 = 0x9002;
const ATT_ATTACHMENT: u16 = 0x9005;
const ATT_OEM_CODEPAGE: u16 = 0x9007;

const PR_ATTACH_FILENAME: u16 = 0x3704;
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
const PR_ATTACH_MIME_TAG: u16 = 0x370e;
const PR_DISPLAY_NAME: u16 = 0x3001;
const PR_ATTACH_DATA: u16 = 0x3701;

/// One file found in a TNEF stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TnefFile {
    /// Long file name, else the short title, else "attachment-<n>".
    pub name: String,
    /// Declared MIME type (`PR_ATTACH_MIME_TAG`), often empty.
    pub mime_type: String,
    pub data: Vec<u8>,
}

/// What a TNEF stream holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unpacked {
    pub files: Vec<TnefFile>,
    /// Empty when the whole stream was read; else what stopped it or was
    /// odd ("damaged at byte 4711: attribute length past the end").
    pub status: String,
}

#[derive(Default)]
struct Building {
    title: String,
    long_name: String,
    short_name: String,
    display_name: String,
    mime_type: String,
    data: Option<Vec<u8>>,
}

impl Building {
    /// The file, when the attachment had data (one without, an OLE
    /// object or a link, is no file: the `tnef` program skips it too).
    fn finish(self, n: usize) -> Option<TnefFile> {
        let data = self.data?;
        let name = [
            self.long_name,
            self.title,
            self.short_name,
            self.display_name,
        ]
        .into_iter()
        .map(|s| s.trim_end_matches('\0').trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| format!("attachment-{n}"));
        Some(TnefFile {
            name,
            mime_type: self.mime_type,
            data,
        })
    }
}

/// A little-endian reader over a byte slice that never reads past it.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn skip_pad(&mut self, len: usize) -> Option<()> {
        self.take((4 - len % 4) % 4).map(drop)
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
}

/// Unpacks the attachments of a TNEF stream; None when `data` is not one.
pub fn unpack(data: &[u8]) -> Option<Unpacked> {
    if !data.starts_with(&SIGNATURE) {
        return None;
    }
    let mut c = Cursor { data, pos: 6 };
    let mut out = Unpacked::default();
    let mut current: Option<Building> = None;
    let mut codepage = 0u32;
    let mut bad_checksums = 0;
    while !c.done() {
        let at = c.pos;
        let Some((level, id, body, checksum)) = attribute(&mut c) else {
            out.status =
                format!("damaged at byte {at}: attribute cut short; kept what came before");
            break;
        };
        if body.iter().map(|&b| u32::from(b)).sum::<u32>() as u16 != checksum {
            bad_checksums += 1;
        }
        match (level, (id & 0xffff) as u16) {
            (_, ATT_OEM_CODEPAGE) if body.len() >= 4 => {
                codepage = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
            }
            (LVL_ATTACHMENT, ATT_ATTACH_REND_DATA) => {
                if let Some(f) = current.take().and_then(|b| b.finish(out.files.len() + 1)) {
                    out.files.push(f);
                }
                current = Some(Building::default());
            }
            (LVL_ATTACHMENT, ATT_ATTACH_TITLE) => {
                current.get_or_insert_default().title = decode_8bit(body, codepage);
            }
            (LVL_ATTACHMENT, ATT_ATTACH_DATA) => {
                current.get_or_insert_default().data = Some(body.to_vec());
            }
            (LVL_ATTACHMENT, ATT_ATTACHMENT) => {
                let b = current.get_or_insert_default();
                if let Err(why) = mapi_props(body, codepage, b) {
                    out.status = format!("attachment properties at byte {at}: {why}");
                }
            }
            _ => {}
        }
    }
    if let Some(f) = current.take().and_then(|b| b.finish(out.files.len() + 1)) {
        out.files.push(f);
    }
    if bad_checksums > 0 && out.status.is_empty() {
        out.status = format!("{bad_checksums} attribute checksums wrong; read all the same");
    }
    Some(out)
}

/// One attribute: (level, id, data, checksum).
fn attribute<'a>(c: &mut Cursor<'a>) -> Option<(u8, u32, &'a [u8], u16)> {
    let level = c.u8()?;
    let id = c.u32()?;
    let len = c.u32()? as usize;
    let body = c.take(len)?;
    let checksum = c.u16()?;
    Some((level, id, body, checksum))
}

/// Text in an 8-bit property or attribute: UTF-8 when it is valid, else
/// the message's code page, NULs at the end removed.
fn decode_8bit(b: &[u8], codepage: u32) -> String {
    let b = match b.iter().position(|&x| x == 0) {
        Some(n) => &b[..n],
        None => b,
    };
    if let Ok(s) = std::str::from_utf8(b) {
        return s.to_owned();
    }
    let label: &[u8] = match codepage {
        932 => b"shift_jis",
        936 => b"gbk",
        949 => b"euc-kr",
        950 => b"big5",
        50220..=50222 => b"iso-2022-jp",
        51932 => b"euc-jp",
        1250 => b"windows-1250",
        1251 => b"windows-1251",
        1253 => b"windows-1253",
        1254 => b"windows-1254",
        _ => b"windows-1252",
    };
    match charset::Charset::for_label(label) {
        Some(cs) => cs.decode_without_bom_handling(b).0.into_owned(),
        None => String::from_utf8_lossy(b).into_owned(),
    }
}

fn decode_utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Size of a fixed-size MAPI property type's value; None for the
/// variable-size ones.
fn fixed_size(ty: u16) -> Option<usize> {
    Some(match ty {
        0x0001 => 0,                                     // PT_NULL
        0x0002 | 0x0003 | 0x0004 | 0x000a | 0x000b => 4, // I2 (padded), LONG, R4, ERROR, BOOLEAN (padded)
        0x0005 | 0x0006 | 0x0007 | 0x0014 | 0x0040 => 8, // DOUBLE, CURRENCY, APPTIME, I8, SYSTIME
        0x0048 => 16,                                    // CLSID
        _ => return None,
    })
}

/// Reads the MAPI properties of `attAttachment` into `b`: the names and
/// MIME tag, and the data when it is only there (`PR_ATTACH_DATA_OBJ`).
fn mapi_props(body: &[u8], codepage: u32, b: &mut Building) -> Result<(), String> {
    let mut c = Cursor { data: body, pos: 0 };
    let cut = || "cut short".to_owned();
    let count = c.u32().ok_or_else(cut)?;
    // Every property takes at least its 4-byte tag: a count beyond what
    // the bytes can hold is damage, and the loop below is bounded by the
    // input's length, never by a number the sender wrote.
    if count as usize > c.remaining() / 4 {
        return Err(format!(
            "{count} properties, more than the {} bytes left can hold",
            c.remaining()
        ));
    }
    for _ in 0..count {
        let ty = c.u16().ok_or_else(cut)?;
        let id = c.u16().ok_or_else(cut)?;
        if id >= 0x8000 {
            // A named property: GUID, then an id or a UTF-16 name.
            c.take(16).ok_or_else(cut)?;
            if c.u32().ok_or_else(cut)? == 1 {
                let len = c.u32().ok_or_else(cut)? as usize;
                c.take(len).ok_or_else(cut)?;
                c.skip_pad(len).ok_or_else(cut)?;
            } else {
                c.u32().ok_or_else(cut)?;
            }
        }
        let multi = ty & 0x1000 != 0;
        let base = ty & !0x1000;
        let values = if multi || fixed_size(base).is_none() {
            c.u32().ok_or_else(cut)? as usize
        } else {
            1
        };
        // A count is only believed when the bytes left can hold that many
        // values: each takes its fixed size or at least its 4-byte length.
        // A multi-valued type of size 0 (PT_NULL) would loop up to 4e9
        // times over nothing, so it is refused (no real writer makes one).
        let per_value = fixed_size(base).unwrap_or(4);
        if per_value == 0 && values > 1 {
            return Err(format!(
                "property 0x{id:04x}: {values} values of a zero-size type 0x{ty:04x}"
            ));
        }
        if values > c.remaining() / per_value.max(1) {
            return Err(format!(
                "property 0x{id:04x}: {values} values, more than the {} bytes left can hold",
                c.remaining()
            ));
        }
        for _ in 0..values {
            if let Some(n) = fixed_size(base) {
                c.take(n).ok_or_else(cut)?;
                continue;
            }
            if !matches!(base, 0x001e | 0x001f | 0x0102 | 0x000d) {
                return Err(format!("property 0x{id:04x} of unknown type 0x{ty:04x}"));
            }
            let len = c.u32().ok_or_else(cut)? as usize;
            let v = c.take(len).ok_or_else(cut)?;
            c.skip_pad(len).ok_or_else(cut)?;
            let text = || match base {
                0x001f => decode_utf16(v),
                _ => decode_8bit(v, codepage),
            };
            match id {
                PR_ATTACH_LONG_FILENAME => b.long_name = text(),
                PR_ATTACH_FILENAME => b.short_name = text(),
                PR_DISPLAY_NAME => b.display_name = text(),
                PR_ATTACH_MIME_TAG => b.mime_type = text(),
                PR_ATTACH_DATA if b.data.is_none() => {
                    // An object begins with the 16-byte interface id.
                    let data = if base == 0x000d {
                        v.get(16..).unwrap_or_default()
                    } else {
                        v
                    };
                    b.data = Some(data.to_vec());
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
