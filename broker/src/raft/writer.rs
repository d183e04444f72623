//! The log writer: makes Raft state durable off the driver thread.
//!
//! The driver hands over one `WriteBatch` per round and goes on with the next round while
//! this thread writes and fsyncs. Batches that queue up while an fsync is in progress are
//! written together and covered by a single fsync (RocksDB syncs its WAL up to the last
//! write), so the number of fsyncs falls as load rises. Batches are written in the order
//! they were queued, which keeps each group's log writes in Raft order.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use rocksdb::WriteBatch;

use super::DriverMsg;
use crate::log::snapshot::{self, Received};
use crate::log::PartitionShared;
use crate::metrics;
use crate::storage::log_files::Collect;
use crate::storage::{self, Db, FileWrite};

#[derive(Default)]
pub struct PersistJob {
    pub batch: WriteBatch,
    /// Entries for log files, appended and synced before any batch of the pass is written
    /// (the batch holds their pointers).
    pub files: Vec<FileWrite>,
    /// Groups whose log files go once the batch is written (it deletes their keys).
    pub remove_files: Vec<u64>,
    /// Groups whose files older than the first one still pointed into may go once the
    /// batch is written (it compacts their logs).
    pub collect_files: Vec<Collect>,
    /// Readies made durable by this batch: (group, ready number).
    pub readies: Vec<(u64, u64)>,
    /// Partitions whose offset index is stored by this batch, up to the given last offset.
    pub flushed: Vec<(Arc<PartitionShared>, i64)>,
    /// Told once the batch is written (a group's deletion, which must land before the
    /// group can be opened again).
    pub landed: Vec<mpsc::Sender<()>>,
    /// Snapshots to install before the batch is written: they replace what their groups
    /// held, and the batch may already hold entries that follow them.
    pub ingest: Vec<Received>,
}

impl PersistJob {
    /// Deletes the log files that the job's batch, now written, left without a pointer.
    pub fn tidy_files(&mut self, db: &Db) {
        for group in std::mem::take(&mut self.remove_files) {
            if let Err(e) = db.files.remove_group(group) {
                tracing::warn!(group, error = %e, "deleting a deleted group's log files failed");
            }
        }
        for c in std::mem::take(&mut self.collect_files) {
            match db.files.collect(db, &c) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(group = c.group, files = n, "dead log files deleted"),
                Err(e) => {
                    tracing::warn!(group = c.group, error = %e, "deleting dead log files failed")
                }
            }
        }
    }

    /// Marks what the job stored as readable from RocksDB.
    pub fn written(self) -> Vec<(u64, u64)> {
        for landed in self.landed {
            let _ = landed.send(());
        }
        for (p, last) in self.flushed {
            p.mark_flushed(last);
        }
        self.readies
    }
}

/// Runs before each pass of the writer: tests use it to make the writer lag behind the
/// driver. (The `raft-log-writer` fail point does the same for a broker process, through
/// the `FAILPOINTS` environment variable.)
pub type WriteHook = Arc<dyn Fn() + Send + Sync>;

pub fn start(
    db: Db,
    done: mpsc::Sender<DriverMsg>,
    hook: Option<WriteHook>,
) -> std::io::Result<(mpsc::Sender<PersistJob>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<PersistJob>();
    let thread = std::thread::Builder::new()
        .name("raft-log-writer".into())
        .spawn(move || run(db, rx, done, hook))?;
    Ok((tx, thread))
}

fn run(
    db: Db,
    rx: mpsc::Receiver<PersistJob>,
    done: mpsc::Sender<DriverMsg>,
    hook: Option<WriteHook>,
) {
    while let Ok(first) = rx.recv() {
        if let Some(hook) = &hook {
            hook();
        }
        fail::fail_point!("raft-log-writer");
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let started = Instant::now();
        // Entries' bytes first: a pointer must never be durable before what it names.
        let appended: Vec<FileWrite> = jobs
            .iter_mut()
            .flat_map(|job| std::mem::take(&mut job.files))
            .collect();
        if let Err(e) = db.files.write(&appended) {
            tracing::error!(error = %e, "raft log file write failed; stopping");
            std::process::exit(70);
        }
        // Only Raft state (entries, hard state) must be durable before the driver goes on;
        // applied state can be rebuilt from the log, so a round that stored nothing else
        // costs no fsync. One sync on the last write covers every earlier one.
        let sync_at = jobs.iter().rposition(|job| !job.readies.is_empty());
        let mut readies = Vec::new();
        for (i, mut job) in jobs.into_iter().enumerate() {
            for received in std::mem::take(&mut job.ingest) {
                if let Err(e) = snapshot::install(&db, &received) {
                    tracing::error!(group = received.group, error = %e, "installing a snapshot failed; stopping");
                    std::process::exit(70);
                }
                metrics::RAFT_SNAPSHOTS_INSTALLED.inc();
                tracing::info!(
                    group = received.group,
                    index = received.index,
                    batches = received.batches,
                    "snapshot installed"
                );
            }
            let batch = std::mem::take(&mut job.batch);
            if let Err(e) = storage::write(&db, batch, Some(i) == sync_at) {
                // Nothing written after this point could be acknowledged safely.
                tracing::error!(error = %e, "raft log write failed; stopping");
                std::process::exit(70);
            }
            job.tidy_files(&db);
            readies.extend(job.written());
        }
        if readies.is_empty() {
            continue; // only applied state was written: nothing for the driver to advance
        }
        metrics::RAFT_SYNC_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::RAFT_SYNC_GROUPS.observe(readies.len() as f64);
        if done.send(DriverMsg::Persisted(readies)).is_err() {
            return;
        }
    }
}
