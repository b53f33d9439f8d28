//! Log entries: decoding never panics, and whatever decodes re-encodes to the same bytes
//! (the encoding is canonical). Compact ranges from bytes too.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = tlog::Entry::decode(data) {
        assert_eq!(e.encode(), data);
    }
    if let Ok(c) = tlog::CompactRange::from_bytes(data) {
        assert_eq!(c.to_bytes(), data);
        let _ = c.root();
    }
});
