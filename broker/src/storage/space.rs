//! Free space on the data directory's filesystem, watched so that a filling disk makes
//! the broker refuse new records with a Kafka error instead of running RocksDB out of
//! space (a failed log write ends the broker, and it could not start again until space
//! returned). Below `storage_min_free_bytes` the broker answers Produce with
//! KAFKA_STORAGE_ERROR (clients retry it) and, as a follower, leaves new entries
//! unacknowledged so that its leader counts on the other replicas; once space returns it
//! catches up and serves again. The margin covers what RocksDB still writes on its own:
//! memtable flushes, blob files and compactions of data already accepted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{register_int_gauge, IntGauge};

/// How often free space is looked at: a statvfs call, negligible at this rate.
const CHECK_EVERY: Duration = Duration::from_millis(250);

static FREE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "chronik_storage_free_bytes",
        "Bytes available to the broker on its data directory's filesystem"
    )
    .unwrap()
});
static FULL: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "chronik_storage_full",
        "1 while free space is below storage_min_free_bytes and new records are refused"
    )
    .unwrap()
});

#[derive(Debug, Default)]
pub struct DiskSpace {
    dir: PathBuf,
    min_free: u64,
    full: AtomicBool,
}

impl DiskSpace {
    /// Watches `dir` (checked once now, so the state is right before the first request).
    pub fn new(dir: PathBuf, min_free: u64) -> Arc<Self> {
        let space = Arc::new(DiskSpace {
            dir,
            min_free,
            full: AtomicBool::new(false),
        });
        space.refresh();
        space
    }

    /// Whether new records must be refused.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Looks at the filesystem again; logs when the state changes.
    pub fn refresh(&self) {
        let free = match rustix::fs::statvfs(&self.dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read free disk space");
                return;
            }
        };
        FREE_BYTES.set(free.min(i64::MAX as u64) as i64);
        let full = free < self.min_free;
        FULL.set(full as i64);
        if self.full.swap(full, Ordering::AcqRel) != full {
            if full {
                tracing::error!(free, min_free = self.min_free, dir = %self.dir.display(),
                    "disk nearly full: refusing new records (KAFKA_STORAGE_ERROR) until space returns");
            } else {
                tracing::info!(
                    free,
                    min_free = self.min_free,
                    "disk space back: accepting records again"
                );
            }
        }
    }

    /// Keeps the state current for as long as the process lives.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        let space = self.clone();
        std::thread::Builder::new()
            .name("disk-space".into())
            .spawn(move || loop {
                std::thread::sleep(CHECK_EVERY);
                space.refresh();
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_below_the_margin_and_not_above_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!DiskSpace::new(dir.path().into(), 0).is_full());
        assert!(DiskSpace::new(dir.path().into(), u64::MAX).is_full());
    }
}
