//! Reading the whole database back: every lease of one snapshot (a dump), and `verify`, which
//! reads every key of the four column families with checksum verification on (so every block
//! of every table file is checked by RocksDB), checks that every history event decodes, and
//! checks both directions of both indexes:
//! every lease has its two index entries, and every index entry points to a lease that agrees
//! with it. The counters must agree too: the lease count with the leases read, the revision
//! with the highest revision stored.

use orbit_persistence_core::encoding::{
    DecodeError, decode_expiry_index_key, decode_node_index_key, encode_reference,
    expiry_index_key, node_index_key,
};
use orbit_persistence_core::verify::VerifyReport;
use orbit_persistence_core::{
    AddressableLease, AddressableReference, LeaseEvent, NodeId, OrbitResult, Timestamp,
};
use rocksdb::{DB, IteratorMode, ReadOptions, SnapshotWithThreadMode};

use crate::options::{
    CF_BY_EXPIRY, CF_BY_NODE, CF_HISTORY, CF_LEASES, KEY_LEASE_COUNT, KEY_REVISION,
};
use crate::store::{Store, rocks_err};

/// Keys read and checked per step.
const CHUNK: usize = 1024;

type Snapshot<'a> = SnapshotWithThreadMode<'a, DB>;
type Entry = (Box<[u8]>, Box<[u8]>);

/// Reads that check every block's checksum and do not push the whole database through the
/// block cache.
fn full_read() -> ReadOptions {
    let mut o = ReadOptions::default();
    o.set_verify_checksums(true);
    o.fill_cache(false);
    o
}

impl Store {
    /// Calls `f` with every entry of `cf` in key order, [`CHUNK`] at a time.
    fn scan_chunks(
        &self,
        snapshot: &Snapshot<'_>,
        cf: &str,
        mut f: impl FnMut(&[Entry]) -> OrbitResult<()>,
    ) -> OrbitResult<()> {
        let mut chunk = Vec::with_capacity(CHUNK);
        for item in snapshot.iterator_cf_opt(self.cf(cf), full_read(), IteratorMode::Start) {
            chunk.push(item.map_err(|e| rocks_err("scan", &self.path().join(cf), e))?);
            if chunk.len() == CHUNK {
                f(&chunk)?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            f(&chunk)?;
        }
        Ok(())
    }

    /// Calls `each` with every lease of one snapshot, in reference order; returns how many.
    pub fn for_each_lease(
        &self,
        each: &mut dyn FnMut(AddressableLease) -> OrbitResult<()>,
    ) -> OrbitResult<u64> {
        let snapshot = self.db().snapshot();
        let mut n = 0;
        self.scan_chunks(&snapshot, CF_LEASES, |chunk| {
            for (key, value) in chunk.iter().filter(|(k, _)| !is_counter(k)) {
                each(self.decode(key, value)?)?;
                n += 1;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// Reads everything back; what is wrong goes into the report (an error that stops a scan
    /// is a problem too).
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        for file in self.db().live_files().unwrap_or_default() {
            report.files_checked += 1;
            report.bytes_checked += file.size as u64;
        }
        let snapshot = self.db().snapshot();
        if let Err(e) = self.check_leases(&snapshot, &mut report) {
            report.problem(e.to_string());
        }
        if let Err(e) = self.check_node_index(&snapshot, &mut report) {
            report.problem(e.to_string());
        }
        if let Err(e) = self.check_expiry_index(&snapshot, &mut report) {
            report.problem(e.to_string());
        }
        if let Err(e) = self.check_history(&snapshot, &mut report) {
            report.problem(e.to_string());
        }
        report
    }

    /// Every event of the change history decodes under its revision (absent in a store
    /// opened read-only that was written before the history existed).
    fn check_history(&self, snapshot: &Snapshot<'_>, report: &mut VerifyReport) -> OrbitResult<()> {
        if self.db().cf_handle(CF_HISTORY).is_none() {
            return Ok(());
        }
        self.scan_chunks(snapshot, CF_HISTORY, |chunk| {
            for (key, value) in chunk {
                let Ok(revision) = <[u8; 8]>::try_from(&**key).map(u64::from_be_bytes) else {
                    report.problem(format!("{CF_HISTORY}: a key of {} bytes", key.len()));
                    continue;
                };
                if let Err(e) = LeaseEvent::decode_value(revision, value) {
                    report.problem(format!(
                        "{CF_HISTORY}: the event of revision {revision}: {e}"
                    ));
                }
            }
            Ok(())
        })
    }

    /// Every lease decodes under its own key and has both index entries; the counters agree.
    fn check_leases(&self, snapshot: &Snapshot<'_>, report: &mut VerifyReport) -> OrbitResult<()> {
        let mut max_revision = 0;
        let (by_node, by_expiry) = (self.cf(CF_BY_NODE), self.cf(CF_BY_EXPIRY));
        self.scan_chunks(snapshot, CF_LEASES, |chunk| {
            let mut leases = Vec::with_capacity(chunk.len());
            for (key, value) in chunk.iter().filter(|(k, _)| !is_counter(k)) {
                match self.decode(key, value) {
                    Ok(lease) if encode_reference(&lease.reference) != **key => {
                        report.problem(format!(
                            "{CF_LEASES}: the lease under key {key:02x?} is of {:?}",
                            lease.reference
                        ))
                    }
                    Ok(lease) => leases.push(lease),
                    Err(e) => report.problem(e.to_string()),
                }
            }
            report.leases += leases.len() as u64;
            max_revision = leases
                .iter()
                .map(|l| l.revision)
                .fold(max_revision, u64::max);
            let wanted: Vec<_> = leases
                .iter()
                .flat_map(|l| {
                    [
                        (by_node, node_index_key(&l.node_id, &l.reference)),
                        (by_expiry, expiry_index_key(l.expires_at, &l.reference)),
                    ]
                })
                .collect();
            let found =
                snapshot.multi_get_cf_opt(wanted.iter().map(|(cf, k)| (*cf, k)), full_read());
            for (i, got) in found.into_iter().enumerate() {
                let index = if i % 2 == 0 { CF_BY_NODE } else { CF_BY_EXPIRY };
                let got = got.map_err(|e| rocks_err("multi_get", &self.path().join(index), e))?;
                if got.is_none() {
                    report.problem(format!(
                        "{index}: no entry for the lease of {:?}",
                        leases[i / 2].reference
                    ));
                }
            }
            Ok(())
        })?;
        let count = self.counter(KEY_LEASE_COUNT)?;
        if count != report.leases {
            report.problem(format!(
                "{CF_LEASES}: the lease counter says {count}, {} leases were read",
                report.leases
            ));
        }
        let revision = self.counter(KEY_REVISION)?;
        if revision < max_revision {
            report.problem(format!(
                "{CF_LEASES}: the revision counter ({revision}) is below a stored revision \
                 ({max_revision}): revisions could be reused"
            ));
        }
        Ok(())
    }

    /// Every node index entry points to a lease held by that node.
    fn check_node_index(
        &self,
        snapshot: &Snapshot<'_>,
        report: &mut VerifyReport,
    ) -> OrbitResult<()> {
        self.check_index(snapshot, report, CF_BY_NODE, |key| {
            decode_node_index_key(key).map(|(node, r)| (r, Indexed::Node(node)))
        })
    }

    /// Every expiry index entry points to a lease expiring then.
    fn check_expiry_index(
        &self,
        snapshot: &Snapshot<'_>,
        report: &mut VerifyReport,
    ) -> OrbitResult<()> {
        self.check_index(snapshot, report, CF_BY_EXPIRY, |key| {
            decode_expiry_index_key(key).map(|(at, r)| (r, Indexed::Expiry(at)))
        })
    }

    /// Scans index `cf`; `decode` gives each entry's reference and what it says of its lease.
    fn check_index(
        &self,
        snapshot: &Snapshot<'_>,
        report: &mut VerifyReport,
        cf: &str,
        decode: impl Fn(&[u8]) -> Result<(AddressableReference, Indexed), DecodeError>,
    ) -> OrbitResult<()> {
        let leases_cf = self.cf(CF_LEASES);
        self.scan_chunks(snapshot, cf, |chunk| {
            let mut entries = Vec::with_capacity(chunk.len());
            for (key, _) in chunk {
                match decode(key) {
                    Ok((r, indexed)) => entries.push((key, encode_reference(&r), indexed)),
                    Err(e) => report.problem(format!("{cf}: entry {key:02x?}: {e}")),
                }
            }
            let found = snapshot
                .multi_get_cf_opt(entries.iter().map(|(_, k, _)| (leases_cf, k)), full_read());
            for ((key, lease_key, indexed), got) in entries.iter().zip(found) {
                let got =
                    got.map_err(|e| rocks_err("multi_get", &self.path().join(CF_LEASES), e))?;
                match got {
                    None => report.problem(format!("{cf}: entry {key:02x?} has no lease")),
                    Some(v) => match self.decode(lease_key, &v) {
                        Ok(lease) if !indexed.agrees(&lease) => report.problem(format!(
                            "{cf}: entry {key:02x?} disagrees with its lease {lease:?}"
                        )),
                        Ok(_) => {}
                        // Reported once already, by the lease scan.
                        Err(_) => {}
                    },
                }
            }
            Ok(())
        })
    }
}

/// What an index entry says of its lease.
enum Indexed {
    /// The node holding it.
    Node(NodeId),
    /// When it expires.
    Expiry(Timestamp),
}

impl Indexed {
    fn agrees(&self, lease: &AddressableLease) -> bool {
        match self {
            Indexed::Node(node) => lease.node_id == *node,
            Indexed::Expiry(at) => lease.expires_at == *at,
        }
    }
}

/// Whether `key` of the leases family is one of the counters (they start with 0x00, which no
/// encoded reference does).
fn is_counter(key: &[u8]) -> bool {
    key.first() == Some(&0)
}
