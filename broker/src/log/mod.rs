//! Partition logs: record batches (opaque bytes), the state machine that assigns offsets
//! when Raft commits them, and the read path that serves fetches.

pub mod batch;
pub mod control;
pub mod partition;
pub mod read;
pub mod snapshot;

pub use partition::{AppendOutcome, PartitionMachine, PartitionShared};
