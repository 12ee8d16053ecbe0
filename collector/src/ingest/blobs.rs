//! Raw messages held and uploaded: which blobs an agent may take as held
//! (its own uploads, still stored), a batch cut before its first event
//! whose raw message is not held, and the MissingBlobs and PutBlob calls.

use kiroku_common::quote::quote;
use kiroku_proto::{
    BlobChunk, Event, MissingBlobsRequest, MissingBlobsResponse, PutBlobResponse, event::Kind,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::IngestService;
use super::commit::Incoming;
use crate::auth;
use crate::store::Store;

/// Most missing blobs named in one Ack.
const MISSING_BLOBS_MAX: usize = 1000;
/// The raw message an event says the collector holds: `raw_sha256`, unless
/// the agent stated that the content could not be kept (`raw_not_kept`).
fn held_raw(e: &Event) -> Option<&str> {
    match &e.kind {
        Some(Kind::Email(m)) if !m.raw_sha256.is_empty() && m.raw_not_kept.is_empty() => {
            Some(&m.raw_sha256)
        }
        _ => None,
    }
}

/// Whether the collector holds blob `sha` as far as `uploader` may know:
/// stored, and uploaded by that identity itself. Whether another host's
/// content is stored is not the business of an agent (it would be an
/// oracle for "was this document ever mailed?"); the price is that two
/// agents with the same raw message each upload it once (stored once).
/// Blocking (file system, sled).
fn held_for(store: &Store, uploader: &str, sha: &str) -> bool {
    if !store.meta.uploaded_by(uploader, sha).unwrap_or(false) {
        return false;
    }
    // The agent goes on as if it were held: a purge must spare it a
    // while. The claim comes before the look, and a purge reads claims
    // under the blob store's lock as it removes: either it sees this
    // claim, or the blob is gone before `has` and the agent uploads it.
    if let Err(e) = store.meta.claim_blob(sha, crate::clock::now_ms()) {
        tracing::warn!(sha256 = %sha, error = %e, "cannot note a blob's claim; not trusting the stored copy");
        return false;
    }
    store.blobs.has(sha)
}

/// Cuts a batch just before its first event whose raw message the
/// collector does not hold (for `uploader`, see [`held_for`]), and names
/// the missing blobs from there on (at most [`MISSING_BLOBS_MAX`]). An
/// event is never acknowledged before its blob is stored: its agent
/// uploads the blobs (or states that it lost them) and sends the rest
/// again. Blocking (file system).
pub(super) fn cut_at_missing_blob(
    store: &Store,
    uploader: &str,
    events: &mut Vec<Incoming>,
) -> Vec<String> {
    let missing = |i: &Incoming| {
        held_raw(&i.event)
            .filter(|sha| !held_for(store, uploader, sha))
            .map(str::to_owned)
    };
    let Some((first, sha)) = events
        .iter()
        .enumerate()
        .find_map(|(i, e)| missing(e).map(|sha| (i, sha)))
    else {
        return Vec::new();
    };
    let mut shas: Vec<String> = std::iter::once(sha)
        .chain(events[first + 1..].iter().filter_map(missing))
        .take(MISSING_BLOBS_MAX)
        .collect();
    shas.sort();
    shas.dedup();
    events.truncate(first);
    shas
}

pub(super) async fn missing_blobs(
    svc: &IngestService,
    req: Request<MissingBlobsRequest>,
) -> Result<Response<MissingBlobsResponse>, Status> {
    let uploader = auth::caller(&req)?.to_string();
    let shas = req.into_inner().sha256;
    if let Some(bad) = shas.iter().find(|s| !kiroku_common::is_sha256_hex(s)) {
        return Err(Status::invalid_argument(format!(
            "not a lower-case hex sha256: {}",
            quote(bad)
        )));
    }
    let store = svc.store.clone();
    let missing = tokio::task::spawn_blocking(move || {
        shas.into_iter()
            .filter(|s| !held_for(&store, &uploader, s))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(MissingBlobsResponse { sha256: missing }))
}

pub(super) async fn put_blob(
    svc: &IngestService,
    req: Request<Streaming<BlobChunk>>,
) -> Result<Response<PutBlobResponse>, Status> {
    let id = auth::caller(&req)?;
    let mut chunks = req.into_inner();
    let first = chunks
        .next()
        .await
        .ok_or_else(|| Status::invalid_argument("empty PutBlob stream"))??;
    let (sha, size) = (first.sha256.clone(), first.size);
    if !kiroku_common::is_sha256_hex(&sha) {
        return Err(Status::invalid_argument(format!(
            "not a lower-case hex sha256: {}",
            quote(&sha)
        )));
    }
    if size > svc.max_blob_bytes {
        return Err(Status::resource_exhausted(format!(
            "blob of {size} bytes is over the collector's max_blob_bytes ({})",
            svc.max_blob_bytes
        )));
    }
    // A full disk pauses blob uploads too; the agent keeps the blob and
    // uploads it again. The space stays promised to this upload until
    // it is stored, so concurrent uploads cannot together pass the
    // reserve.
    let store = svc.store.clone();
    let reservation = tokio::task::spawn_blocking(move || store.disk.reserve(size))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|why| {
            tracing::warn!(identity = %id, sha256 = %sha, size, "blob upload refused: {why}");
            Status::unavailable(why)
        })?;
    // Grow with what actually arrives: an announced size is not a
    // reason to reserve memory.
    let mut data = Vec::with_capacity((size as usize).min(8 << 20));
    data.extend_from_slice(&first.data);
    while let Some(c) = chunks.next().await {
        let c = c?;
        if (data.len() + c.data.len()) as u64 > size {
            return Err(Status::invalid_argument(format!(
                "blob {sha} is longer than its announced size {size}"
            )));
        }
        data.extend_from_slice(&c.data);
    }
    if data.len() as u64 != size {
        return Err(Status::invalid_argument(format!(
            "blob {sha}: received {} bytes, announced {size}",
            data.len()
        )));
    }
    let store = svc.store.clone();
    let (sha2, uploader) = (sha.clone(), id.to_string());
    // `already_stored` only tells the agent about its own uploads.
    let stored = tokio::task::spawn_blocking(move || {
            let before = held_for(&store, &uploader, &sha2);
            // Claimed before it is stored (or found stored): a purge that
            // removes blobs reads claims under the blob store's lock, so it
            // either spares this blob or removes it before `put` looks.
            if let Err(e) = store.meta.claim_blob(&sha2, crate::clock::now_ms()) {
                tracing::error!(identity = %uploader, error = %e, "cannot note the blob's claim; it is refused for now");
                return Err(crate::store::blobs::BlobError::Io {
                    path: store.dir.join("meta"),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            let stored = store.blobs.put(&sha2, &data).map(|_| before);
            drop(reservation);
            if stored.is_ok()
                && let Err(e) = store.meta.note_uploader(&uploader, &sha2)
            {
                tracing::error!(identity = %uploader, error = %e, "cannot note the blob's uploader; it will be asked for again");
            }
            stored
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            // The disk, not the agent, is at fault: it retries later.
            crate::store::blobs::BlobError::Io { .. } => {
                tracing::error!(identity = %id, error = %e, "storing a blob failed");
                Status::unavailable(format!("collector could not store the blob: {e}"))
            }
            e => {
                tracing::warn!(identity = %id, error = %e, "blob refused");
                Status::invalid_argument(e.to_string())
            }
        })?;
    Ok(Response::new(PutBlobResponse {
        sha256: sha,
        already_stored: stored,
    }))
}
