//! Cosignatures: any note verified against a witness key, and any cosigner key string, never
//! panics; a cosignature this key made always verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tlog::cosignature::{CosignatureSigner, CosignatureVerifier};

fuzz_target!(|data: &[u8]| {
    let signer = CosignatureSigner::new("fuzz.example/witness", [7; 32]).expect("a valid name");
    let verifier = signer.verifier();
    if let Ok(note) = tlog::Note::parse(data) {
        let _ = verifier.verify(&note);
        let line = signer.sign(&note.text, 1_700_000_000).expect("a valid time");
        let cosigned = tlog::Note {
            text: note.text.clone(),
            signatures: vec![line],
        };
        assert_eq!(verifier.verify(&cosigned), Ok(1_700_000_000));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(v) = CosignatureVerifier::from_key_string(s) {
            assert!(CosignatureVerifier::from_key_string(&v.to_key_string()).is_ok());
        }
        let _ = CosignatureSigner::from_key_string(s);
    }
});
