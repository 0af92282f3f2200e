//! Writing new tables, shared by flushes and compactions: [`TableOutput`] splits a sorted
//! stream of entries into tables of a target size, at a write rate limit.
//!
//! A new table is durable before anything names it: [`crate::sstable::TableBuilder::finish`]
//! syncs the file, [`TableOutput::finish`] syncs the directory, and only then does the manifest
//! edit that adds it get written. A crash in between leaves an unnamed file, deleted at the
//! next open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use orbit_persistence_core::OrbitResult;

use crate::levels::{TableHandle, TableMeta};
use crate::shared::Shared;
use crate::sstable::{Table, TableBuilder, table_path};

/// Tables being written for one level, split when one reaches a size.
pub struct TableOutput<'a> {
    shared: &'a Shared,
    level: u8,
    split_at: u64,
    rate_limit: u64,
    started: Instant,
    written_before: u64,
    current: Option<(u64, TableBuilder)>,
    done: Vec<Arc<TableHandle>>,
}

impl<'a> TableOutput<'a> {
    /// Output to `level`, starting a new table past `split_at` bytes, writing at most
    /// `rate_limit` bytes per second (0: no limit).
    pub fn new(shared: &'a Shared, level: u8, split_at: u64, rate_limit: u64) -> Self {
        TableOutput {
            shared,
            level,
            split_at,
            rate_limit,
            started: Instant::now(),
            written_before: 0,
            current: None,
            done: Vec::new(),
        }
    }

    /// Appends an entry (keys strictly increasing across the whole output).
    pub fn add(&mut self, key: &[u8], value: Option<&[u8]>) -> OrbitResult<()> {
        if self.current.is_none() {
            let id = self.shared.new_table_id();
            let builder = TableBuilder::create(
                &*self.shared.fs,
                &table_path(&self.shared.dir, id),
                self.shared.settings.block_size,
                self.shared.settings.bloom_fp_rate,
            )?;
            self.current = Some((id, builder));
        }
        let Some((_, builder)) = self.current.as_mut() else {
            return Ok(());
        };
        builder.add(key, value)?;
        if builder.estimated_size() >= self.split_at {
            self.finish_table()?;
        }
        self.throttle();
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written_before + self.current.as_ref().map_or(0, |(_, b)| b.written)
    }

    /// Sleeps as long as the output is ahead of the rate limit.
    fn throttle(&self) {
        if self.rate_limit == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.written() as f64 / self.rate_limit as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed + Duration::from_millis(5) {
            std::thread::sleep(due - elapsed);
        }
    }

    fn finish_table(&mut self) -> OrbitResult<()> {
        let Some((id, builder)) = self.current.take() else {
            return Ok(());
        };
        let info = builder.finish()?;
        self.written_before += info.file_size;
        let path = table_path(&self.shared.dir, id);
        let table = Table::open(&*self.shared.fs, &path, id, self.shared.cache.clone())?;
        self.done.push(Arc::new(TableHandle {
            meta: TableMeta {
                id,
                level: self.level,
                file_size: info.file_size,
                entries: info.entries,
                smallest: info.smallest,
                largest: info.largest,
            },
            table: Arc::new(table),
        }));
        Ok(())
    }

    /// Finishes the last table and syncs the directory: the tables are durable, not yet named.
    pub fn finish(mut self) -> OrbitResult<Vec<Arc<TableHandle>>> {
        self.finish_table()?;
        if !self.done.is_empty() {
            self.shared.fs.sync_dir(&self.shared.dir)?;
        }
        Ok(std::mem::take(&mut self.done))
    }
}

impl Drop for TableOutput<'_> {
    /// An output dropped unfinished (an error, or a compaction abandoned at close) removes its
    /// files: nothing names them.
    fn drop(&mut self) {
        let ids = self
            .current
            .take()
            .map(|(id, _)| id)
            .into_iter()
            .chain(self.done.drain(..).map(|t| t.meta.id));
        for id in ids {
            let _ = self
                .shared
                .fs
                .remove_file(&table_path(&self.shared.dir, id));
        }
    }
}
