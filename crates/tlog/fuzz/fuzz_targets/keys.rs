//! Verifier and signer key strings: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(v) = tlog::Verifier::from_key_string(s) {
            assert!(tlog::Verifier::from_key_string(&v.to_key_string()).is_ok());
        }
        let _ = tlog::Signer::from_key_string(s);
    }
});
