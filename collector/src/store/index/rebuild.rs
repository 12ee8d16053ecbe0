//! An index written under another schema, rebuilt from its stored events.

use std::path::Path;

use kiroku_proto::Event;
use prost::Message;
use tantivy::schema::Value;
use tantivy::{DocAddress, Index, TantivyDocument};

use super::{EventIndex, IndexError};

impl EventIndex {
    /// A crash between the two renames of [`EventIndex::rebuild`] leaves no
    /// index at `path` but a finished rebuild beside it: move it in place.
    pub(super) fn finish_interrupted_rebuild(path: &Path) {
        let fresh = path.with_extension("rebuilding");
        if !path.join("meta.json").exists() && fresh.join("meta.json").exists() {
            let _ = std::fs::remove_dir_all(path);
            match std::fs::rename(&fresh, path) {
                Ok(()) => {
                    tracing::warn!(index = %path.display(), "finished an index rebuild interrupted by a crash")
                }
                Err(e) => {
                    tracing::error!(index = %path.display(), error = %e, "cannot finish an interrupted index rebuild")
                }
            }
        }
    }

    /// Re-indexes every stored event of the index at `path` under the
    /// current schema, into a new directory that then takes its place; the
    /// old one moves to `<path>.pre-<unix time>`.
    pub(super) fn rebuild(path: &Path) -> Result<(), IndexError> {
        let terr = |source| IndexError::Tantivy {
            path: path.to_owned(),
            source,
        };
        let other = |message: String| IndexError::Other {
            path: path.to_owned(),
            message,
        };
        tracing::warn!(index = %path.display(), "the index was written with another schema: rebuilding it from its stored events");
        let old = Index::open_in_dir(path).map_err(terr)?;
        let event = old.schema().get_field("event").map_err(|_| {
            other("the index has another schema and no stored events to rebuild from: move the directory aside and start the collector again".into())
        })?;
        let fresh_path = path.with_extension("rebuilding");
        if fresh_path.exists() {
            std::fs::remove_dir_all(&fresh_path)
                .map_err(|e| other(format!("removing {}: {e}", fresh_path.display())))?;
        }
        let fresh = Self::open_exact(&fresh_path)?;
        let reader = old.reader().map_err(terr)?;
        let searcher = reader.searcher();
        let mut batch = Vec::new();
        let mut n = 0u64;
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            for doc in seg.doc_ids_alive() {
                let d: TantivyDocument = searcher
                    .doc(DocAddress::new(ord as u32, doc))
                    .map_err(terr)?;
                let bytes = d
                    .get_first(event)
                    .and_then(|v| v.as_bytes())
                    .unwrap_or_default();
                batch.push(
                    Event::decode(bytes)
                        .map_err(|e| other(format!("stored event does not decode: {e}")))?,
                );
                if batch.len() >= 10_000 {
                    fresh.add(&batch)?;
                    fresh.commit()?;
                    n += batch.len() as u64;
                    batch.clear();
                }
            }
        }
        fresh.add(&batch)?;
        fresh.commit()?;
        n += batch.len() as u64;
        drop((fresh, searcher, reader, old));
        let aside = path.with_extension(format!("pre-{}", kiroku_common::now_ms() / 1000));
        std::fs::rename(path, &aside)
            .map_err(|e| other(format!("moving the old index to {}: {e}", aside.display())))?;
        std::fs::rename(&fresh_path, path).map_err(|e| {
            other(format!(
                "moving the rebuilt index {} into place: {e}",
                fresh_path.display()
            ))
        })?;
        tracing::warn!(index = %path.display(), events = n, old = %aside.display(), "index rebuilt; delete the old copy once satisfied");
        Ok(())
    }
}
