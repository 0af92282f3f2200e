//! Restoring a backup ([`crate::backup`]) into an open store, through
//! [`AddressableDirectoryProvider::restore_leases`]: written once for every backend.

use std::path::Path;
use std::sync::Arc;

use crate::backup::{BackupReader, RestoreSummary, verify_backup};
use crate::error::{OrbitError, OrbitResult};
use crate::fs::FileSystem;
use crate::provider::AddressableDirectoryProvider;
use crate::types::AddressableLease;

/// Restores the backup at `path` into `target`, which must be an empty store that never
/// wrote (revision 0): verifies the whole file first (nothing is written if it is damaged),
/// then loads the leases chunk by chunk with their revisions and raises the store's revision
/// to the backup's R ([`AddressableDirectoryProvider::restore_leases`]). `target_name` names
/// the backend in the summary.
pub async fn restore_into(
    fs: Arc<dyn FileSystem>,
    path: &Path,
    target: &dyn AddressableDirectoryProvider,
    target_name: &str,
) -> OrbitResult<RestoreSummary> {
    let blocking = |e: tokio::task::JoinError| {
        OrbitError::internal("backup", format!("a blocking read failed: {e}"))
    };
    let (verify_fs, verify_path) = (Arc::clone(&fs), path.to_path_buf());
    let summary = tokio::task::spawn_blocking(move || verify_backup(&*verify_fs, &verify_path))
        .await
        .map_err(blocking)??;
    let revision = target.current_revision().await?;
    if revision != 0 {
        return Err(OrbitError::invalid(format!(
            "a backup restores only into an empty store; this {target_name} store is at revision \
             {revision}"
        )));
    }
    let r = summary.header.revision;
    // The file is read on a blocking thread, one chunk ahead of the writes.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<OrbitResult<Vec<AddressableLease>>>(2);
    let read_path = path.to_path_buf();
    let reading = tokio::task::spawn_blocking(move || {
        let mut reader = match BackupReader::open(&*fs, &read_path) {
            Ok(reader) => reader,
            Err(e) => return tx.blocking_send(Err(e)).map_err(|_| ()),
        };
        loop {
            let next = reader.next_chunk().transpose();
            let last = !matches!(next, Some(Ok(_)));
            if let Some(item) = next {
                tx.blocking_send(item).map_err(|_| ())?;
            }
            if last {
                return Ok(());
            }
        }
    });
    let mut leases = 0u64;
    target.restore_leases(&[], r).await?;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        leases += chunk.len() as u64;
        target.restore_leases(&chunk, r).await?;
    }
    let _ = reading.await.map_err(blocking)?;
    if leases != summary.header.leases {
        return Err(OrbitError::invalid(format!(
            "{} changed while it was restored: it held {} leases when verified and {leases} \
             when read",
            path.display(),
            summary.header.leases
        )));
    }
    Ok(RestoreSummary {
        target: target_name.to_string(),
        leases,
        revision: r,
        backup: summary,
    })
}
