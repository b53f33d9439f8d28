use super::*;
use crate::note::Signer;

/// The checkpoint of tlog-cosignature's example (§Ed25519 signed message).
const CHECKPOINT: &str =
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
const TIME: u64 = 1_679_315_147;
/// Made by an independent implementation (the `aics-tlog` Python package, 0.2.1) from the seed
/// 0x00..0x1f, the name below, the example checkpoint and the example's timestamp: a
/// cross-implementation vector for the key id, the key string and the signed message.
const NAME: &str = "witness.example.com/w1";
const VKEY: &str = "witness.example.com/w1+a0059f11+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4";
const LINE: &str = "\u{2014} witness.example.com/w1 oAWfEQAAAABkGFDLBuRDazBLVac2NE+Y+IjbjQOcXLfF9CSDZVUIoS83rE1nFZsVE8YiWV6Ngr7lV8H6bdoBQGP/l73euDMQ9k+bBQ==\n";

fn seed() -> [u8; 32] {
    core::array::from_fn(|i| u8::try_from(i).unwrap())
}

fn cosigned(line: &str) -> Note {
    Note::parse(format!("{CHECKPOINT}\n{line}").as_bytes()).unwrap()
}

#[test]
fn signed_message_is_the_specs() {
    // tlog-cosignature §Ed25519 signed message, the example verbatim.
    assert_eq!(
        signed_message(CHECKPOINT, TIME),
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    );
}

#[test]
fn cross_implementation_vector() {
    let signer = CosignatureSigner::new(NAME, seed()).unwrap();
    assert_eq!(signer.verifier().to_key_string(), VKEY);
    assert_eq!(signer.sign(CHECKPOINT, TIME).unwrap().to_line(), LINE);
    let verifier = CosignatureVerifier::from_key_string(VKEY).unwrap();
    assert_eq!(verifier.verify(&cosigned(LINE)), Ok(TIME));
    let back = CosignatureSigner::from_key_string(&signer.to_key_string()).unwrap();
    assert_eq!(back.verifier(), verifier);
}

#[test]
fn the_specs_example_line_parses_with_its_timestamp() {
    // tlog-cosignature §Format: the example's witness line carries key id 0x8d66cf3f and the
    // example's timestamp. Its key is not published, so it can only be someone else's here.
    let line = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
    let sig = NoteSignature::parse_line(line).unwrap();
    assert_eq!(sig.key_id, 0x8d66_cf3f);
    assert_eq!(sig.signature.len(), 72);
    assert_eq!(
        u64::from_be_bytes(sig.signature[..8].try_into().unwrap()),
        TIME
    );
    let verifier = CosignatureVerifier::from_key_string(VKEY).unwrap();
    assert_eq!(
        verifier.verify(&cosigned(&format!("{line}\n"))),
        Err(CosignatureError::NotCosigned(NAME.into()))
    );
}

#[test]
fn another_checkpoint_or_time_does_not_verify() {
    let verifier = CosignatureVerifier::from_key_string(VKEY).unwrap();
    let other = CHECKPOINT.replace("20852163", "20852164");
    let note = Note::parse(format!("{other}\n{LINE}").as_bytes()).unwrap();
    assert_eq!(
        verifier.verify(&note),
        Err(CosignatureError::BadSignature(NAME.into()))
    );
    // The timestamp is signed: moving it breaks the signature.
    let mut sig = NoteSignature::parse_line(LINE.trim_end()).unwrap();
    sig.signature[7] ^= 1;
    assert_eq!(
        verifier.verify(&cosigned(&sig.to_line())),
        Err(CosignatureError::BadSignature(NAME.into()))
    );
}

#[test]
fn lines_of_other_keys_are_ignored_and_bad_own_lines_fail() {
    let verifier = CosignatureVerifier::from_key_string(VKEY).unwrap();
    // Same name, another key: another key id, so not this witness's line.
    let impostor = CosignatureSigner::new(NAME, [9; 32]).unwrap();
    let forged = impostor.sign(CHECKPOINT, TIME).unwrap().to_line();
    assert_eq!(
        verifier.verify(&cosigned(&forged)),
        Err(CosignatureError::NotCosigned(NAME.into()))
    );
    // A plain note signature (type 0x01) by the same key and name has another key id too.
    let note_signer = Signer::new(NAME, seed()).unwrap();
    let plain = note_signer.sign(CHECKPOINT);
    assert_eq!(
        verifier.verify(&plain),
        Err(CosignatureError::NotCosigned(NAME.into()))
    );
    // The key id of this witness with a signature of the wrong length.
    let mut short = NoteSignature::parse_line(LINE.trim_end()).unwrap();
    short.signature.truncate(40);
    assert!(matches!(
        verifier.verify(&cosigned(&short.to_line())),
        Err(CosignatureError::Malformed { .. })
    ));
    // A good line next to a bad one of the same key: the whole note is refused.
    let mut bad = NoteSignature::parse_line(LINE.trim_end()).unwrap();
    bad.signature[20] ^= 0x40;
    let both = format!("{LINE}{}", bad.to_line());
    assert_eq!(
        verifier.verify(&cosigned(&both)),
        Err(CosignatureError::BadSignature(NAME.into()))
    );
}

#[test]
fn timestamps_out_of_range() {
    let signer = CosignatureSigner::new(NAME, seed()).unwrap();
    assert_eq!(
        signer.sign(CHECKPOINT, 0),
        Err(CosignatureError::BadTimestamp(0))
    );
    assert_eq!(
        signer.sign(CHECKPOINT, MAX_TIMESTAMP + 1),
        Err(CosignatureError::BadTimestamp(MAX_TIMESTAMP + 1))
    );
    assert!(signer.sign(CHECKPOINT, MAX_TIMESTAMP).is_ok());
    let mut sig = signer.sign(CHECKPOINT, TIME).unwrap();
    sig.signature[..8].copy_from_slice(&(MAX_TIMESTAMP + 1).to_be_bytes());
    assert_eq!(
        signer.verifier().verify(&cosigned(&sig.to_line())),
        Err(CosignatureError::BadTimestamp(MAX_TIMESTAMP + 1))
    );
}

#[test]
fn key_strings() {
    // A log's note key (type 0x01) is not a witness key.
    let log = Signer::new("log.example", [1; 32]).unwrap();
    assert!(matches!(
        CosignatureVerifier::from_key_string(&log.verifier().to_key_string()),
        Err(CosignatureError::BadKey(_))
    ));
    assert!(matches!(
        CosignatureSigner::from_key_string(&log.to_key_string()),
        Err(CosignatureError::BadKey(_))
    ));
    // A key id that does not match.
    let wrong_id = VKEY.replace("a0059f11", "a0059f12");
    assert!(matches!(
        CosignatureVerifier::from_key_string(&wrong_id),
        Err(CosignatureError::BadKey(_))
    ));
    // The identity point is a small-order key: anyone could forge under it.
    let mut raw = vec![COSIGNATURE_V1, 1];
    raw.extend_from_slice(&[0; 31]);
    let mut public = [0u8; 32];
    public[0] = 1;
    let weak = format!("w+{:08x}+{}", key_id("w", &public), B64.encode(&raw));
    assert!(matches!(
        CosignatureVerifier::from_key_string(&weak),
        Err(CosignatureError::BadKey(_))
    ));
    assert!(CosignatureVerifier::from_key_string("no plus signs").is_err());
    assert!(CosignatureSigner::new("bad name", [0; 32]).is_err());
}
