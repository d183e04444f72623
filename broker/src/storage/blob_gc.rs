//! Blob garbage collection, switched on only while garbage is a large share of blob bytes.
//!
//! Record batches live in blob files, one file per memtable flush holding every partition's
//! batches of that moment. RocksDB's always-on blob GC relocates the oldest live blobs in
//! every compaction that touches them; for a log, whose oldest data is exactly what
//! retention deletes next, that rewrites most bytes a second time (a third more broker CPU
//! under a steady produce load, measured with `make bench`). Switched off for good, though,
//! a partition with long retention would pin the deleted batches of every other partition
//! sharing its blob files. So GC runs only while garbage exceeds half of the blob bytes, and
//! stops again once it is under a quarter.

use rocksdb::DB;

/// Garbage share of blob bytes above which GC is switched on.
const ON_ABOVE: f64 = 0.5;
/// Garbage share below which it is switched off again.
const OFF_BELOW: f64 = 0.25;

/// Options applied while GC is on: the oldest half of the blob files is relocated by
/// compactions, and files at least half garbage get compactions of their own.
const GC_ON: [(&str, &str); 3] = [
    ("enable_blob_garbage_collection", "true"),
    ("blob_garbage_collection_age_cutoff", "0.5"),
    ("blob_garbage_collection_force_threshold", "0.5"),
];
const GC_OFF: [(&str, &str); 1] = [("enable_blob_garbage_collection", "false")];

/// Whether GC is on; `storage::open` starts the database with it off.
#[derive(Debug, Default)]
pub struct BlobGc {
    on: bool,
}

impl BlobGc {
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Reads the garbage share and switches GC on or off when it crossed a threshold.
    /// Returns the share read (0 without blob files).
    pub fn adjust(&mut self, db: &DB) -> Result<f64, rocksdb::Error> {
        let share = garbage_share(db)?;
        let want = if self.on {
            share >= OFF_BELOW
        } else {
            share > ON_ABOVE
        };
        if want != self.on {
            db.set_options(if want { &GC_ON[..] } else { &GC_OFF[..] })?;
            self.on = want;
            tracing::info!(
                garbage_share = share,
                on = want,
                "blob garbage collection switched"
            );
        }
        Ok(share)
    }
}

fn garbage_share(db: &DB) -> Result<f64, rocksdb::Error> {
    let live = db
        .property_int_value("rocksdb.live-blob-file-size")?
        .unwrap_or(0);
    let garbage = db
        .property_int_value("rocksdb.live-blob-file-garbage-size")?
        .unwrap_or(0);
    Ok(if live == 0 {
        0.0
    } else {
        garbage as f64 / live as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::WriteBatch;

    fn blob_bytes(db: &DB) -> u64 {
        db.property_int_value("rocksdb.total-blob-file-size")
            .unwrap()
            .unwrap()
    }

    /// Four flushes, each holding three parts of a short-lived key range to one part of a
    /// long-lived one, as partitions with different retention share blob files.
    fn shared_blob_files(dir: &std::path::Path) -> crate::storage::Db {
        let db = crate::storage::open(dir).unwrap();
        let value = vec![7u8; 8192];
        for flush in 0..4u32 {
            for i in 0..30u32 {
                let short = [b"a".as_slice(), &flush.to_be_bytes(), &i.to_be_bytes()].concat();
                db.put(short, &value).unwrap();
                if i % 3 == 0 {
                    let long = [b"b".as_slice(), &flush.to_be_bytes(), &i.to_be_bytes()].concat();
                    db.put(long, &value).unwrap();
                }
            }
            db.flush().unwrap();
        }
        db
    }

    #[test]
    fn gc_runs_only_while_deleted_batches_dominate_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = shared_blob_files(dir.path());
        let mut gc = BlobGc::default();
        assert_eq!(gc.adjust(&db).unwrap(), 0.0, "nothing deleted yet");
        assert!(!gc.is_on());

        // Retention drops the short-lived range: its blobs become garbage once compacted,
        // but every blob file still holds live long-lived batches.
        let before = blob_bytes(&db);
        let mut wb = WriteBatch::default();
        wb.delete_range(b"a".as_slice(), b"b".as_slice());
        db.write(wb).unwrap();
        db.compact_range(None::<&[u8]>, None::<&[u8]>);
        assert_eq!(
            blob_bytes(&db),
            before,
            "GC off: pinned files are kept whole"
        );
        let share = gc.adjust(&db).unwrap();
        assert!(share > ON_ABOVE, "garbage share {share}");
        assert!(gc.is_on());

        // With GC on, compactions relocate the live blobs and drop the pinned files (each
        // full compaction takes the oldest half of the files still there).
        let mut again = rocksdb::CompactOptions::default();
        again.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        for _ in 0..4 {
            db.compact_range_opt(None::<&[u8]>, None::<&[u8]>, &again);
        }
        assert!(
            blob_bytes(&db) < before / 2,
            "blob bytes {} of {before}",
            blob_bytes(&db)
        );
        let share = gc.adjust(&db).unwrap();
        assert!(share < OFF_BELOW, "garbage share {share} after GC");
        assert!(!gc.is_on());
    }
}
