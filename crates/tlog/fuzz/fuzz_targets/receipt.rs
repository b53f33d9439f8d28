//! tlog-proof receipts: parsing and verification never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = tlog::InclusionReceipt::parse(data) {
        let signer = tlog::Signer::new("fuzz.example/log", [1; 32]).expect("a valid name");
        let _ = r.verify(&signer.verifier(), None);
        assert_eq!(tlog::InclusionReceipt::parse(r.encode().as_bytes()).as_ref(), Ok(&r));
    }
});
