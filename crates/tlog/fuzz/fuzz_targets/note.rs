//! Signed notes: parsing never panics, and a parsed note re-encodes to what it parsed from.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(note) = tlog::Note::parse(data) {
        let again = tlog::Note::parse(note.encode().as_bytes()).expect("an encoded note parses");
        assert_eq!(again, note);
    }
});
