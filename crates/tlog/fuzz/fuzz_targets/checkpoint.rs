//! Checkpoint text and signed checkpoints: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cp) = tlog::Checkpoint::from_text(text) {
            assert_eq!(tlog::Checkpoint::from_text(&cp.to_text()).as_ref(), Ok(&cp));
        }
    }
    let signer = tlog::Signer::new("fuzz.example/log", [1; 32]).expect("a valid name");
    let _ = tlog::Checkpoint::open(data, &signer.verifier());
});
