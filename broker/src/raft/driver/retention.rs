//! Retention: whole batches older than retention.ms or beyond retention.bytes, or below
//! a log start that a control entry moved (DeleteRecords, a coordinator checkpoint), are
//! dropped, moving the log start offset and compacting the Raft log below them, once
//! every in-sync voter has the entries (a replica that needs them later, one that was
//! away or is new, gets a snapshot). Log files left with nothing live go once the
//! compaction is written.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::WriteBatch;

use super::Driver;
use crate::log;
use crate::raft::membership::followers_have;
use crate::raft::writer::PersistJob;
use crate::storage::keys;

impl Driver {
    /// Drops whole batches older than retention.ms or beyond retention.bytes, moving the
    /// log start offset and compacting the Raft log below them.
    pub(super) fn enforce_retention(&mut self) -> anyhow::Result<()> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut wb = WriteBatch::default();
        let mut moved = Vec::new();
        let mut collect = Vec::new();
        for (name, record) in &self.meta.topics {
            let setting = |key: &str, default: i64| {
                record
                    .configs
                    .get(key)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            let retention_ms = setting("retention.ms", self.cfg.retention_ms);
            let retention_bytes = setting("retention.bytes", self.cfg.retention_bytes);
            let unlimited = retention_ms < 0 && retention_bytes < 0;
            for gid in &record.groups {
                let Some(g) = self.groups.get_mut(gid) else {
                    continue;
                };
                let Some(p) = g.partition.as_mut() else {
                    continue;
                };
                if unlimited && !p.below_start {
                    continue;
                }
                let total = p.shared.log_bytes();
                let start = p.shared.log_start();
                let plan = log::read::retention_plan(&self.db, &p.shared, |b, dropped| {
                    let deleted = b.last_offset < start;
                    let too_old = retention_ms >= 0 && b.max_timestamp < now_ms - retention_ms;
                    let too_big = retention_bytes >= 0
                        && total.saturating_sub(dropped + b.size as u64) >= retention_bytes as u64;
                    deleted || too_old || too_big
                });
                let Some((new_start, raft_index, dropped)) = plan else {
                    p.below_start = false;
                    continue;
                };
                if !followers_have(&g.node, &g.caught_up, raft_index) {
                    // A follower keeping up gets them in a moment, from the log: cheaper
                    // than a snapshot.
                    continue;
                }
                wb.delete_range(
                    keys::offset_index_key(*gid, 0),
                    keys::offset_index_key(*gid, new_start),
                );
                p.truncate_front(new_start, dropped, &mut wb);
                // (Every batch wholly below the start is in this plan: none is left.)
                p.below_start = false;
                g.node.mut_store().stage_compact(raft_index, &mut wb)?;
                collect.extend(g.node.store().file_collection());
                moved.push(*gid);
                tracing::info!(topic = %name, partition = p.shared.partition, first_kept = new_start,
                    "retention dropped the batches below the first kept");
            }
        }
        if moved.is_empty() {
            return Ok(());
        }
        let moved: HashSet<u64> = moved.into_iter().collect();
        let flushed = self.publish(&moved);
        self.submit(PersistJob {
            batch: wb,
            flushed,
            collect_files: collect,
            ..PersistJob::default()
        })
    }
}
