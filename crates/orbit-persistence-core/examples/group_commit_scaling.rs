//! Measures what group commit buys on this disk: durable 192-byte records per second from 1, 4,
//! 16 and 64 concurrent writers through [`GroupCommit`], next to the physical floor (one thread,
//! append + fdatasync per record, no batching). Ratios matter, not absolute numbers.
//!
//! `cargo run --release -p orbit-persistence-core --example group_commit_scaling [RECORDS]`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use orbit_persistence_core::fs::{FileSystem, StdFileSystem};
use orbit_persistence_core::group_commit::{CommitHandler, GroupCommit};
use orbit_persistence_core::log::{LogBatch, LogWriter};
use orbit_persistence_core::{OrbitResult, SyncMode};

const RECORD: [u8; 192] = [0x5a; 192];

/// Logs one record per request; nothing to publish.
struct Appender {
    log: LogWriter,
}

impl CommitHandler for Appender {
    type Request = ();
    type Response = ();

    fn stage(&mut self, _: (), batch: &mut LogBatch) -> OrbitResult<()> {
        batch.push(&RECORD)
    }

    fn write(&mut self, batch: &LogBatch, sync: bool) -> OrbitResult<()> {
        self.log.append(batch)?;
        if sync {
            self.log.sync()?;
        }
        Ok(())
    }

    fn publish(&mut self) {}

    fn abort(&mut self) {}

    fn sync(&mut self) -> OrbitResult<()> {
        self.log.sync()
    }
}

fn floor(dir: &Path, records: usize) -> OrbitResult<f64> {
    let fs = StdFileSystem::new();
    let file = fs.open(
        &dir.join("floor.log"),
        orbit_persistence_core::fs::OpenMode::CreateNew,
    )?;
    let start = Instant::now();
    for _ in 0..records {
        file.append(&RECORD)?;
        file.sync_data()?;
    }
    Ok(records as f64 / start.elapsed().as_secs_f64())
}

fn grouped(dir: &Path, writers: usize, records: usize) -> OrbitResult<(f64, u64)> {
    let fs = StdFileSystem::new();
    let log = LogWriter::create(&fs, &dir.join(format!("group-{writers}.log")))?;
    let gc = Arc::new(GroupCommit::spawn(
        "bench",
        Appender { log },
        SyncMode::Always,
    )?);
    let per_writer = records / writers;
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let gc = gc.clone();
            std::thread::spawn(move || -> OrbitResult<()> {
                for _ in 0..per_writer {
                    gc.submit_blocking(())?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer panicked")?;
    }
    let rate = (per_writer * writers) as f64 / start.elapsed().as_secs_f64();
    let syncs = gc.stats().syncs;
    gc.shutdown()?;
    Ok((rate, syncs))
}

fn main() -> OrbitResult<()> {
    let records: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir()
        .map_err(|e| orbit_persistence_core::OrbitError::io("tempdir", "/tmp", e))?;
    let floor_rate = floor(dir.path(), records)?;
    println!("| writers | durable records/s | x floor | fdatasyncs |");
    println!("|---:|---:|---:|---:|");
    println!("| floor (append+fdatasync, 1 thread) | {floor_rate:.0} | 1.00 | {records} |");
    for writers in [1, 4, 16, 64] {
        let (rate, syncs) = grouped(dir.path(), writers, records)?;
        println!(
            "| {writers} | {rate:.0} | {:.2} | {syncs} |",
            rate / floor_rate
        );
    }
    Ok(())
}
