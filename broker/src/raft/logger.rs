//! raft-rs logs through `slog`; this drain hands its records to `tracing`, so Raft's own
//! account of elections and rejected messages shows up with the broker's logs (at the
//! `raft` target: e.g. `--log info,raft=debug`).

use slog::{Drain, Level, OwnedKVList, Record, KV};

pub struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = KeyValues(String::new());
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let msg = record.msg();
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}{}", fields.0),
            Level::Warning => tracing::warn!(target: "raft", "{msg}{}", fields.0),
            Level::Info => tracing::info!(target: "raft", "{msg}{}", fields.0),
            Level::Debug | Level::Trace => tracing::debug!(target: "raft", "{msg}{}", fields.0),
        }
        Ok(())
    }
}

struct KeyValues(String);

impl slog::Serializer for KeyValues {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

pub fn root() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}
