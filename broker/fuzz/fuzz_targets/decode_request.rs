//! Feeds arbitrary bytes to the request decoder and the record-batch validator: whatever
//! a client sends, they must return an error, never panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let _ = chronik_broker::protocol::decode(frame.clone(), ([127, 0, 0, 1], 9).into());
    let _ = chronik_broker::log::batch::split_and_validate(&frame);
});
