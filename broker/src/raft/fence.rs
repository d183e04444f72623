//! Keeps an idempotent producer's batches in order across a refusal that did not write.
//!
//! A producer pipelines up to five batches per partition. When this node refuses one of
//! them without writing it (not the leader at that moment, raft-rs dropping a proposal
//! during a leadership transfer, a deposed leader's pending proposals), the batches behind
//! it may still be accepted (leadership regained, the transfer aborted) and would then
//! reach the log with a sequence gap: `OUT_OF_ORDER_SEQUENCE_NUMBER`. Kafka's leader never
//! answers that way in these cases, and librdkafka reacts to it by bumping its producer
//! epoch for *every* partition and renumbering all batches waiting for a retry, among them
//! batches another leader has in fact committed, which are then stored twice.
//!
//! So after a refusal, later batches of the same producer and epoch are refused too, with
//! the same retriable NOT_LEADER_OR_FOLLOWER, until the refused batch comes back (its
//! retry) or is seen committed through another leader; the producer then resends them in
//! order. A fence that nothing lifts (the producer went away) lapses after a while.
//!
//! A batch held back is refused as well, so a commit seen through another leader lifts
//! the fence only if it covers every refused batch; otherwise the fence moves up to the
//! batch after the committed one. (Lifting it outright let the batch after a held one
//! through while the held one was still to come back: a gap, which a chaos run showed as
//! librdkafka's epoch bump "skipped sequence numbers".)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::log::batch::{self, BatchHeader};

/// How long a fence holds without its batch returning: longer than a client's retries of
/// one batch take, short enough that a vanished producer's fence does not linger.
const FENCE_LIFETIME: Duration = Duration::from_secs(60);
/// At most this many producers fenced per group (memory stays bounded whatever clients do).
const MAX_FENCES: usize = 4096;

/// The sequence identity of an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sequenced {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub last_sequence: i32,
}

impl Sequenced {
    /// The identity of a proposed partition entry, if it is an idempotent record batch.
    pub fn of(data: &[u8]) -> Option<Sequenced> {
        if data.len() < batch::HEADER_LEN {
            return None;
        }
        let h: BatchHeader = batch::parse_header(data);
        h.is_idempotent().then(|| Sequenced {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            last_sequence: h.last_sequence(),
        })
    }
}

struct Fence {
    epoch: i16,
    /// The first sequence refused and not seen in the log since: batches after it wait.
    sequence: i32,
    /// The base sequence of the last batch refused (or held back).
    last_refused: i32,
    since: Instant,
}

#[derive(Default)]
pub(super) struct Fences {
    by_producer: HashMap<i64, Fence>,
}

impl Fences {
    /// Records that `b` was refused without being written.
    pub fn refused(&mut self, b: Sequenced, now: Instant) {
        if let Some(f) = self.by_producer.get_mut(&b.producer_id) {
            if f.epoch == b.epoch && now.duration_since(f.since) < FENCE_LIFETIME {
                f.sequence = f.sequence.min(b.base_sequence);
                f.last_refused = f.last_refused.max(b.base_sequence);
                return;
            }
        }
        if self.by_producer.len() >= MAX_FENCES {
            self.by_producer
                .retain(|_, f| now.duration_since(f.since) < FENCE_LIFETIME);
            if self.by_producer.len() >= MAX_FENCES {
                return;
            }
        }
        self.by_producer.insert(
            b.producer_id,
            Fence {
                epoch: b.epoch,
                sequence: b.base_sequence,
                last_refused: b.base_sequence,
                since: now,
            },
        );
    }

    /// Whether `b` must be refused because an earlier batch of its producer was. A batch
    /// at or before the fenced sequence (the retry), or of a newer epoch, lifts the fence.
    /// A batch held back counts as refused: it too must come back before later ones.
    pub fn holds_back(&mut self, b: Sequenced, now: Instant) -> bool {
        let Some(f) = self.by_producer.get_mut(&b.producer_id) else {
            return false;
        };
        let waiting = f.epoch == b.epoch
            && b.base_sequence > f.sequence
            && now.duration_since(f.since) < FENCE_LIFETIME;
        if waiting {
            f.last_refused = f.last_refused.max(b.base_sequence);
        } else {
            self.by_producer.remove(&b.producer_id);
        }
        waiting
    }

    /// A committed batch, through whichever leader. Once it covers every refused batch
    /// nothing is left to wait for; if batches after it were refused, the next of them
    /// must come back before anything later is written.
    pub fn committed(&mut self, b: Sequenced) {
        let Some(f) = self.by_producer.get_mut(&b.producer_id) else {
            return;
        };
        if b.epoch != f.epoch || b.last_sequence >= f.last_refused {
            self.by_producer.remove(&b.producer_id);
        } else if b.last_sequence >= f.sequence {
            f.sequence = b.last_sequence + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, base_sequence: i32) -> Sequenced {
        Sequenced {
            producer_id,
            epoch,
            base_sequence,
            last_sequence: base_sequence,
        }
    }

    #[test]
    fn later_batches_wait_for_the_refused_one() {
        let now = Instant::now();
        let mut f = Fences::default();
        f.refused(batch(7, 0, 3), now);
        assert!(f.holds_back(batch(7, 0, 4), now));
        assert!(f.holds_back(batch(7, 0, 5), now));
        assert!(!f.holds_back(batch(8, 0, 4), now), "other producers pass");
        assert!(!f.holds_back(batch(7, 0, 3), now), "the retry passes");
        assert!(!f.holds_back(batch(7, 0, 4), now), "and lifts the fence");
    }

    #[test]
    fn the_earliest_refusal_counts() {
        let now = Instant::now();
        let mut f = Fences::default();
        f.refused(batch(7, 0, 5), now);
        f.refused(batch(7, 0, 3), now);
        f.refused(batch(7, 0, 4), now);
        assert!(f.holds_back(batch(7, 0, 4), now));
        assert!(!f.holds_back(batch(7, 0, 3), now));
    }

    #[test]
    fn a_new_epoch_or_a_commit_elsewhere_lifts_the_fence() {
        let now = Instant::now();
        let mut f = Fences::default();
        f.refused(batch(7, 0, 3), now);
        assert!(!f.holds_back(batch(7, 1, 0), now));
        assert!(!f.holds_back(batch(7, 0, 9), now));

        f.refused(batch(7, 0, 3), now);
        f.committed(batch(7, 0, 2));
        assert!(
            f.holds_back(batch(7, 0, 4), now),
            "an earlier batch lifts nothing"
        );
        f.committed(batch(7, 0, 3));
        assert!(!f.holds_back(batch(7, 0, 4), now));
    }

    /// The chaos run's gap: batch 3 refused, 4 and 5 held back, then 3 (and 4) seen
    /// committed through the old leader's log. Batch 6 must still wait for 5.
    #[test]
    fn a_commit_elsewhere_moves_the_fence_past_itself_only() {
        let now = Instant::now();
        let mut f = Fences::default();
        f.refused(batch(7, 0, 3), now);
        assert!(f.holds_back(batch(7, 0, 4), now));
        assert!(f.holds_back(batch(7, 0, 5), now));
        f.committed(batch(7, 0, 3));
        f.committed(batch(7, 0, 4));
        assert!(f.holds_back(batch(7, 0, 6), now), "5 has not come back");
        assert!(!f.holds_back(batch(7, 0, 5), now), "5 itself passes");
        assert!(!f.holds_back(batch(7, 0, 6), now), "and then 6");

        f.refused(batch(7, 0, 8), now);
        assert!(f.holds_back(batch(7, 0, 9), now));
        f.committed(Sequenced {
            last_sequence: 9,
            ..batch(7, 0, 8)
        });
        assert!(
            !f.holds_back(batch(7, 0, 10), now),
            "a commit covering every refused batch lifts the fence"
        );
    }

    #[test]
    fn fences_lapse_and_stay_bounded() {
        let start = Instant::now();
        let mut f = Fences::default();
        f.refused(batch(7, 0, 3), start);
        assert!(!f.holds_back(batch(7, 0, 4), start + FENCE_LIFETIME));
        for id in 0..(MAX_FENCES as i64 + 100) {
            f.refused(batch(id, 0, 0), start);
        }
        assert_eq!(f.by_producer.len(), MAX_FENCES);
        f.refused(batch(-5, 0, 0), start + FENCE_LIFETIME);
        assert_eq!(f.by_producer.len(), 1, "lapsed fences make room");
    }
}
