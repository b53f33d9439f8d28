//! tlog-policy files: parsing never panics, and a parsed policy evaluates its quorum and
//! checks cosignatures without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = tlog::policy::Policy::parse(data) {
        let n = p.witnesses().len();
        assert!(p.quorum_met(|_| true) || n == 0);
        let _ = p.quorum_met(|i| i % 2 == 0);
        let _ = p.describe_quorum();
        let note = tlog::Note {
            text: "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n".into(),
            signatures: Vec::new(),
        };
        assert!(!p.check(&note).met || p.quorum_is_none());
    }
});
