//! Control entries: Raft entries of a partition's group that carry an instruction to every
//! replica instead of a record batch. Today there is one, "move the log start offset to
//! N" (Kafka's DeleteRecords, and the checkpoint of a coordinator partition): committed
//! through Raft like a batch, it moves the log start at the same point of the log on every
//! replica, so replicas, restarts and snapshots all agree on it.
//!
//! A control entry is shorter than any record batch (a batch header alone is
//! [`super::batch::HEADER_LEN`] bytes) and starts with a tag no batch can start with at
//! that length, so the two never mix up; a broker that predates an instruction reads it as
//! an empty entry (a new leader's), which changes nothing.

const LOG_START_TAG: &[u8; 16] = b"chronik:logstart";
const LOG_START_LEN: usize = LOG_START_TAG.len() + 8;

/// An instruction carried by a control entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Records below this offset are deleted: it becomes the log start offset (if it is
    /// beyond the current one; never beyond the high watermark).
    LogStart(i64),
}

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Control::LogStart(offset) => {
                let mut v = Vec::with_capacity(LOG_START_LEN);
                v.extend_from_slice(LOG_START_TAG);
                v.extend_from_slice(&offset.to_be_bytes());
                v
            }
        }
    }

    /// The instruction in an entry's data, if it is a control entry.
    pub fn decode(data: &[u8]) -> Option<Control> {
        if data.len() == LOG_START_LEN && data.starts_with(LOG_START_TAG) {
            let offset = i64::from_be_bytes(data[LOG_START_TAG.len()..].try_into().ok()?);
            return Some(Control::LogStart(offset));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_entries_round_trip_and_are_shorter_than_any_batch() {
        let c = Control::LogStart(1234567);
        let bytes = c.encode();
        assert!(bytes.len() < super::super::batch::HEADER_LEN);
        assert_eq!(Control::decode(&bytes), Some(c));
        assert_eq!(Control::decode(b""), None);
        assert_eq!(Control::decode(&bytes[..bytes.len() - 1]), None);
        let batch = crate::log::batch::tests::make_batch(1, -1, -1, b"x");
        assert_eq!(Control::decode(&batch), None);
    }
}
