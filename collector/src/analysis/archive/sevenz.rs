//! 7z through `sevenz-rust2`: names and sizes from the header; content
//! block by block, so that an encrypted block (no password here) is
//! listed by name and skipped while the others are read. With an encrypted
//! header (`7z a -mhe=on`) not even the names can be read: the listing
//! says so.

use std::io::Cursor;

use sevenz_rust2::{Archive, BlockDecoder, Error, Password};

use super::{Opened, Walk, at};

/// The encryption name of a 7z whose content is AES-encrypted.
const AES: &str = "7z-aes";

pub(super) fn list(walk: &mut Walk, data: &[u8], prefix: &str, depth: u32) -> Opened {
    let mut source = Cursor::new(data);
    let password = Password::empty();
    let memory = walk.limits.max_7z_memory_kib;
    let archive = match Archive::read_with_memory_limit(&mut source, &password, memory) {
        Ok(a) => a,
        Err(Error::PasswordRequired | Error::MaybeBadPassword(_)) => {
            walk.encryption.insert(format!("{AES}, names hidden"));
            walk.note(format!(
                "names hidden: {}the 7z header is encrypted",
                at(prefix)
            ));
            return Opened::Listed("7z");
        }
        Err(e) => {
            walk.note(format!("damaged: {}7z: {e}", at(prefix)));
            return Opened::Listed("7z");
        }
    };
    for (i, f) in archive.files.iter().enumerate() {
        if f.is_directory || f.is_anti_item {
            continue;
        }
        if archive.is_file_encrypted(i) {
            if !walk.may_list() {
                break;
            }
            walk.encryption.insert(AES.into());
            walk.unread(
                format!("{prefix}{}", f.name),
                f.size,
                depth,
                true,
                "encrypted",
            );
        } else if !f.has_stream {
            if !walk.may_list() {
                break;
            }
            walk.member(format!("{prefix}{}", f.name), 0, depth, &mut &[][..], true);
        }
    }
    for (block, first) in archive.stream_map.block_first_file_index.iter().enumerate() {
        if walk.stopped {
            break;
        }
        if archive.is_file_encrypted(*first) {
            continue;
        }
        let decoder =
            BlockDecoder::new_with_memory_limit(1, memory, block, &archive, &password, &mut source);
        let result = decoder.for_each_entries(&mut |entry, r| {
            if entry.is_directory || entry.is_anti_item || !entry.has_stream {
                return Ok(true);
            }
            if !walk.may_list() {
                return Ok(false);
            }
            let before = walk.members.len();
            walk.member(
                format!("{prefix}{}", entry.name),
                entry.size,
                depth,
                r,
                true,
            );
            // A member cut short by a bound ends the block: draining it
            // would decode what the bound was there to avoid.
            let cut = walk
                .members
                .get(before)
                .is_some_and(|m| m.sha256.is_empty());
            Ok(!cut && !walk.stopped)
        });
        if let Err(e) = result {
            walk.note(format!("damaged: {}7z block {block}: {e}", at(prefix)));
        }
    }
    Opened::Listed("7z")
}
