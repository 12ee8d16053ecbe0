//! GetRaw's content: a stored raw message streamed in chunks and checked
//! against its hash as it goes, so the last chunk leaves only after the
//! whole content matched.

use std::io::Read;

use kiroku_proto::RawChunk;
use tokio::sync::mpsc;
use tonic::Status;

use kiroku_common::quote::quote;

const RAW_CHUNK: usize = 256 * 1024;

/// Streams a raw message, verified: each chunk is sent only once the read
/// after it succeeded, so the last one goes out only after the whole
/// content matched its hash. On a mismatch (or a read error) the stream
/// ends with `DataLoss` naming the blob and what to do.
pub(super) fn stream_verified(
    mut reader: Box<dyn Read + Send>,
    sha: &str,
    id: &str,
    tx: &mpsc::Sender<Result<RawChunk, Status>>,
) {
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let mut buf = vec![0u8; RAW_CHUNK];
        match read_full(&mut reader, &mut buf) {
            Ok(n) => {
                if let Some(data) = pending.take()
                    && tx.blocking_send(Ok(RawChunk { data })).is_err()
                {
                    return;
                }
                if n == 0 {
                    return;
                }
                buf.truncate(n);
                pending = Some(buf);
            }
            Err(e) => {
                tracing::error!(blob = sha, event_id = %id, error = %e, "a stored raw message is damaged; the download was stopped. {}", crate::store::REPAIR_HINT);
                let _ = tx.blocking_send(Err(Status::data_loss(format!(
                    "raw message {sha} of event {} is damaged and was not served whole: {e}. The collector's operator should {}; it moves damaged blobs aside and names the events they belong to",
                    quote(id),
                    crate::store::REPAIR_HINT
                ))));
                return;
            }
        }
    }
}

/// Fills `buf` as far as the reader allows; 0 means end of data.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
