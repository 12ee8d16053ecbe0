//! Files inside attached mail and TNEF: each recorded as a member of its
//! container and analysed as if attached directly, under the container's
//! path, within the depth and count bounds.

use kiroku_proto::ArchiveMember;

use super::file::message_name;
use super::read::{self, Content};
use super::store::AnnotationError;
use super::{Run, TAG_ARCHIVE_BOUNDED, tnef, types};

impl Run<'_> {
    /// Whether another nested file may be opened; records why not.
    fn room(&mut self, index: usize, depth: u32) -> bool {
        let why = if depth >= self.limits.max_depth {
            format!("cut at depth {}", self.limits.max_depth)
        } else if self.nested >= self.limits.max_nested_files {
            format!(
                "bounded: {} files inside this mail's attachments analysed",
                self.limits.max_nested_files
            )
        } else {
            return true;
        };
        let a = &mut self.out.attachments[index];
        if a.members_status.is_empty() {
            a.members_status = why;
        }
        self.tags.insert(TAG_ARCHIVE_BOUNDED.into());
        false
    }

    /// An attached mail: its files, each recorded and analysed as if
    /// attached directly, under `path`.
    pub(super) fn open_message(
        &mut self,
        index: usize,
        data: &[u8],
        path: &str,
        depth: u32,
    ) -> Result<(), AnnotationError> {
        self.out.attachments[index].container = "message".into();
        if !self.room(index, depth) {
            return Ok(());
        }
        let walked = read::walk_all(data, self.limits.max_file_bytes);
        let files: Vec<_> = walked
            .leaves
            .into_iter()
            .filter(|l| l.attachment || l.content_type == types::MESSAGE)
            .collect();
        let mut members = Vec::new();
        for (n, leaf) in files.into_iter().enumerate() {
            if !self.room(index, depth) {
                break;
            }
            self.nested += 1;
            let name = if !leaf.name.is_empty() {
                leaf.name.clone()
            } else if leaf.content_type == types::MESSAGE {
                message_name(&read::subject(leaf.content.head()))
            } else {
                format!("part-{}", n + 1)
            };
            members.push(ArchiveMember {
                path: name.clone(),
                size: leaf.content.size(),
                sha256: leaf.sha256.clone(),
                detected_type: types::detect(leaf.content.head()).into(),
                depth: 1,
                ..Default::default()
            });
            self.file(
                &name,
                &leaf.content_type,
                &leaf.sha256,
                Some(leaf.content),
                path,
                depth + 1,
            )?;
        }
        self.out.attachments[index].members = members;
        Ok(())
    }

    /// TNEF: its attachments, each recorded and analysed as if attached
    /// directly, under `path`.
    pub(super) fn open_tnef(
        &mut self,
        index: usize,
        data: &[u8],
        path: &str,
        depth: u32,
    ) -> Result<(), AnnotationError> {
        self.out.attachments[index].container = "tnef".into();
        let Some(unpacked) = tnef::unpack(data) else {
            self.out.attachments[index].members_status = "not a TNEF stream (no signature)".into();
            return Ok(());
        };
        self.out.attachments[index].members_status = unpacked.status.clone();
        if !self.room(index, depth) {
            return Ok(());
        }
        let mut members = Vec::new();
        for f in unpacked.files {
            if !self.room(index, depth) {
                break;
            }
            self.nested += 1;
            let sha = kiroku_common::sha256_hex(&f.data);
            members.push(ArchiveMember {
                path: f.name.clone(),
                size: f.data.len() as u64,
                sha256: sha.clone(),
                detected_type: types::detect(&f.data).into(),
                depth: 1,
                ..Default::default()
            });
            let content = Content::of(f.data, self.limits.max_file_bytes);
            self.file(&f.name, &f.mime_type, &sha, Some(content), path, depth + 1)?;
        }
        self.out.attachments[index].members = members;
        Ok(())
    }
}
