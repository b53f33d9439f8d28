//! The wire formats of C2SP tlog-witness (<https://c2sp.org/tlog-witness>, current main):
//! the `add-checkpoint` request body, the `409 Conflict` size body, the `200` cosignature
//! lines, and the origin hash of the monitoring path. Only the formats: deciding whether to
//! cosign needs the witness's state, which lives with the witness.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::hash::Hash;
use crate::note::{MAX_NOTE_BYTES, MAX_SIGNATURES, NoteError, NoteSignature};

/// §add-checkpoint: "The client MUST NOT send more than 63 consistency proof lines."
pub const MAX_PROOF_LINES: usize = 63;
/// The largest `add-checkpoint` body: the old size line, 63 proof lines and a checkpoint note.
/// Checked before anything else.
pub const MAX_ADD_CHECKPOINT_BYTES: usize = 32 + MAX_PROOF_LINES * 45 + 1 + MAX_NOTE_BYTES;
/// The largest `200` answer accepted: [`MAX_SIGNATURES`] lines of an ML-DSA-44 cosignature
/// would not fit, but Ed25519 lines of long names do.
pub const MAX_COSIGNATURE_RESPONSE_BYTES: usize = 64 * 1024;
/// The media type of a `409 Conflict` answer (§add-checkpoint).
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A malformed `add-checkpoint` body: the line (1-based) and what is wrong.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct RequestError {
    pub line: Option<usize>,
    pub message: &'static str,
}

fn at(line: usize, message: &'static str) -> RequestError {
    RequestError {
        line: Some(line),
        message,
    }
}

/// An `add-checkpoint` request (§add-checkpoint):
///
/// ```text
/// old <size>
/// <base64 hash>        (0 to 63 consistency proof lines)
///
/// <signed checkpoint note>
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the client believes the witness last cosigned.
    pub old: u64,
    /// The consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl AddCheckpoint {
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 + self.proof.len() * 45 + self.checkpoint.len());
        out.push_str("old ");
        out.push_str(&self.old.to_string());
        out.push('\n');
        for h in &self.proof {
            out.push_str(&B64.encode(h.0));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a request body, bounding its size first. The checkpoint is returned verbatim;
    /// parsing and verifying it is the next step.
    ///
    /// # Errors
    /// [`RequestError`] naming the line and the problem.
    pub fn parse(bytes: &[u8]) -> Result<Self, RequestError> {
        if bytes.len() > MAX_ADD_CHECKPOINT_BYTES {
            return Err(RequestError {
                line: None,
                message: "the body is larger than an old size line, 63 proof lines and a checkpoint",
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| RequestError {
            line: None,
            message: "the body is not UTF-8",
        })?;
        let (first, mut rest) = text
            .split_once('\n')
            .ok_or(at(1, "the body must start with a line `old <size>`"))?;
        let old = first
            .strip_prefix("old ")
            .and_then(parse_decimal)
            .ok_or(at(
                1,
                "the first line must be `old <size>`, a decimal without leading zeros",
            ))?;
        let mut proof = Vec::new();
        let mut line = 1;
        loop {
            line += 1;
            let (l, after) = rest
                .split_once('\n')
                .ok_or(at(line, "no empty line before the checkpoint"))?;
            rest = after;
            if l.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(at(line, "more than 63 consistency proof lines"));
            }
            let h = B64
                .decode(l)
                .ok()
                .and_then(|b| Hash::from_slice(&b))
                .ok_or(at(
                    line,
                    "a consistency proof line must be one SHA-256 hash in base64",
                ))?;
            proof.push(h);
        }
        if rest.is_empty() {
            return Err(at(line + 1, "no checkpoint after the empty line"));
        }
        Ok(Self {
            old,
            proof,
            checkpoint: rest.to_string(),
        })
    }
}

/// A decimal without leading zeros (`0` itself allowed), as every size in these formats is.
fn parse_decimal(s: &str) -> Option<u64> {
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() == 1 || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// The body of a `409 Conflict`: the size the witness last cosigned, and a newline.
pub fn encode_size(size: u64) -> String {
    format!("{size}\n")
}

/// Parses a `409 Conflict` body. `None` when it is not one decimal and a newline: a witness
/// that answers 409 without its size is an older one refusing a different root at the same
/// size, a fork to the client.
pub fn parse_size(body: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(body).ok()?;
    parse_decimal(s.strip_suffix('\n')?)
}

/// Why a `200` answer's cosignature lines could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("the answer is larger than {MAX_COSIGNATURE_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("the answer is not UTF-8")]
    NotUtf8,
    #[error("the answer has no signature lines")]
    Empty,
    #[error("the answer's last line has no newline")]
    Unterminated,
    #[error("the answer has more than {MAX_SIGNATURES} lines")]
    TooMany,
    #[error("line {line}: {source}")]
    Line { line: usize, source: NoteError },
}

/// Parses the body of a `200` answer: one or more note signature lines, each ending in a
/// newline (§add-checkpoint). Which of them are cosignatures of which key is for the caller
/// to check against the checkpoint it sent.
///
/// # Errors
/// [`ResponseError`] naming the problem.
pub fn parse_cosignature_lines(body: &[u8]) -> Result<Vec<NoteSignature>, ResponseError> {
    if body.len() > MAX_COSIGNATURE_RESPONSE_BYTES {
        return Err(ResponseError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| ResponseError::NotUtf8)?;
    if text.is_empty() {
        return Err(ResponseError::Empty);
    }
    let text = text.strip_suffix('\n').ok_or(ResponseError::Unterminated)?;
    let mut out = Vec::new();
    for (i, l) in text.split('\n').enumerate() {
        if out.len() == MAX_SIGNATURES {
            return Err(ResponseError::TooMany);
        }
        if l.chars().any(char::is_control) {
            return Err(ResponseError::Line {
                line: i + 1,
                source: NoteError::ControlCharacter,
            });
        }
        out.push(
            NoteSignature::parse_line(l).map_err(|source| ResponseError::Line {
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

/// The lines of a `200` answer.
pub fn encode_cosignature_lines(lines: &[NoteSignature]) -> String {
    let mut out = String::new();
    for l in lines {
        l.write_line(&mut out);
    }
    out
}

/// The origin hash of the monitoring path `GET <prefix>/<origin hash>/checkpoint`
/// (§Monitor Retrieval Mechanism): SHA-256 of the origin, lowercase hex.
pub fn origin_hash(origin: &str) -> String {
    Hash(Sha256::digest(origin.as_bytes()).into()).to_hex()
}

#[cfg(test)]
mod tests;
