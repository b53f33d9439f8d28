//! tlog-witness add-checkpoint bodies, 409 size bodies and 200 cosignature answers: parsing
//! never panics, and what parses re-encodes to something that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlog::witness::{
    AddCheckpoint, encode_cosignature_lines, parse_cosignature_lines, parse_size,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = AddCheckpoint::parse(data) {
        assert_eq!(AddCheckpoint::parse(req.encode().as_bytes()).as_ref(), Ok(&req));
    }
    if let Some(size) = parse_size(data) {
        assert_eq!(parse_size(tlog::witness::encode_size(size).as_bytes()), Some(size));
    }
    if let Ok(lines) = parse_cosignature_lines(data) {
        let again = encode_cosignature_lines(&lines);
        assert_eq!(parse_cosignature_lines(again.as_bytes()).as_ref(), Ok(&lines));
    }
});
