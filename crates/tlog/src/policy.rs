//! C2SP tlog-policy (<https://c2sp.org/tlog-policy>): which logs and witnesses are known and
//! which sets of cosignatures make a checkpoint valid.
//!
//! ```text
//! log <vkey> [<url>]
//! witness <name> <vkey> [<url>]
//! group <name> all|any|<k> <member>...
//! quorum <name>|none
//! ```
//!
//! Choices where the spec leaves room, all on the strict side:
//!
//! * The file must be UTF-8 (the spec allows opaque high-bit octets but strongly recommends
//!   UTF-8); names are compared byte for byte, never normalised (§Character set).
//! * A name may be listed as a group member once in the whole file, not only once per group:
//!   that is what makes "each witness can contribute to the quorum in only one way" hold
//!   (§Defining a witness group).
//! * Limits (§Implementation limits recommends at least 32 of each): [`MAX_POLICY_BYTES`],
//!   and [`MAX_ITEMS`] logs, witnesses and groups each.
//! * Log keys are Ed25519 note keys (type 0x01); witness keys Ed25519 `cosignature/v1` keys
//!   (type 0x04). URLs are kept as written; what they must look like is the caller's business.

use std::collections::HashMap;

use crate::cosignature::{CosignatureError, CosignatureVerifier};
use crate::note::{Note, Verifier};

/// The largest policy file accepted: checked before anything else.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// The most logs, witnesses and groups (each) a policy may define.
pub const MAX_ITEMS: usize = 256;

/// Why a policy file was refused: the line (1-based) and what is wrong with it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct PolicyError {
    /// `None` for a problem of the whole file (too large, no quorum line).
    pub line: Option<usize>,
    pub message: String,
}

/// A log the policy accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLog {
    /// Its key; the key name is the log's origin (§Defining a log).
    pub verifier: Verifier,
    pub url: Option<String>,
}

/// A witness the policy knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWitness {
    /// The name the policy's groups and quorum use (not necessarily the key name).
    pub name: String,
    pub verifier: CosignatureVerifier,
    /// Its submission prefix (§Defining a witness), when given.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ref {
    Witness(usize),
    Group(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    threshold: usize,
    members: Vec<Ref>,
}

/// A parsed, validated policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    /// `None`: `quorum none`, no cosignature needed.
    quorum: Option<Ref>,
}

/// A witness's verified cosignature on a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigner {
    /// Index into [`Policy::witnesses`].
    pub witness: usize,
    pub timestamp: u64,
}

/// The cosignatures found on a checkpoint, measured against the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumCheck {
    /// Witnesses whose cosignature verified.
    pub cosigners: Vec<Cosigner>,
    /// Witnesses with a line of their key that does not verify (a broken or forged
    /// cosignature), with the reason.
    pub invalid: Vec<(usize, CosignatureError)>,
    pub met: bool,
}

impl Policy {
    /// Parses a policy file, bounding its size first.
    ///
    /// # Errors
    /// [`PolicyError`] naming the line and the problem.
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                line: None,
                message: format!("the policy is larger than {MAX_POLICY_BYTES} bytes"),
            });
        }
        let mut p = Parser::default();
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            p.line(line).map_err(|message| PolicyError {
                line: Some(i + 1),
                message,
            })?;
        }
        if !p.quorum_seen {
            return Err(PolicyError {
                line: None,
                message: "the policy has no quorum line; add `quorum NAME` (or `quorum none` to require no cosignature)".into(),
            });
        }
        Ok(p.policy)
    }

    pub fn logs(&self) -> &[PolicyLog] {
        &self.logs
    }

    pub fn witnesses(&self) -> &[PolicyWitness] {
        &self.witnesses
    }

    /// The accepted log whose key name is `origin`.
    pub fn log(&self, origin: &str) -> Option<&PolicyLog> {
        self.logs.iter().find(|l| l.verifier.name() == origin)
    }

    /// Is this `quorum none` (no cosignature required)?
    pub fn quorum_is_none(&self) -> bool {
        self.quorum.is_none()
    }

    /// The witnesses that can count towards the quorum (those reachable from the quorum
    /// line), by index.
    pub fn quorum_witnesses(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack: Vec<Ref> = self.quorum.into_iter().collect();
        while let Some(r) = stack.pop() {
            match r {
                Ref::Witness(w) => out.push(w),
                Ref::Group(g) => stack.extend(&self.groups[g].members),
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether the witnesses for which `cosigned(index)` is true meet the quorum. Groups are
    /// defined only in terms of earlier names, so one pass in definition order evaluates
    /// every group (§Defining a witness group: "at least k of its n members").
    pub fn quorum_met(&self, cosigned: impl Fn(usize) -> bool) -> bool {
        let Some(quorum) = self.quorum else {
            return true;
        };
        let mut groups = Vec::with_capacity(self.groups.len());
        let value = |r: Ref, groups: &[bool]| match r {
            Ref::Witness(w) => cosigned(w),
            Ref::Group(g) => groups[g],
        };
        for g in &self.groups {
            let n = g.members.iter().filter(|&&m| value(m, &groups)).count();
            groups.push(n >= g.threshold);
        }
        value(quorum, &groups)
    }

    /// Verifies the cosignature of every witness on the note and checks the quorum. The log's
    /// own signature is not checked here (see [`Policy::log`]).
    pub fn check(&self, note: &Note) -> QuorumCheck {
        let mut cosigners = Vec::new();
        let mut invalid = Vec::new();
        for (i, w) in self.witnesses.iter().enumerate() {
            match w.verifier.verify(note) {
                Ok(timestamp) => cosigners.push(Cosigner {
                    witness: i,
                    timestamp,
                }),
                Err(CosignatureError::NotCosigned(_)) => {}
                Err(e) => invalid.push((i, e)),
            }
        }
        let met = self.quorum_met(|i| cosigners.iter().any(|c| c.witness == i));
        QuorumCheck {
            cosigners,
            invalid,
            met,
        }
    }

    /// The quorum rule in words, e.g. `both (all of: w1, w2)`.
    pub fn describe_quorum(&self) -> String {
        match self.quorum {
            None => "none (no cosignature required)".into(),
            Some(r) => self.describe(r),
        }
    }

    fn describe(&self, r: Ref) -> String {
        match r {
            Ref::Witness(w) => self.witnesses[w].name.clone(),
            Ref::Group(g) => {
                let g = &self.groups[g];
                let members: Vec<String> = g.members.iter().map(|&m| self.describe(m)).collect();
                format!(
                    "{} ({} of: {})",
                    g.name,
                    if g.threshold == g.members.len() {
                        "all".to_string()
                    } else {
                        g.threshold.to_string()
                    },
                    members.join(", ")
                )
            }
        }
    }
}

#[derive(Default)]
struct Parser {
    policy: Policy,
    names: HashMap<String, Ref>,
    /// Names already listed as a group member, with the group that lists them.
    members: HashMap<String, String>,
    quorum_seen: bool,
}

const NONE: &str = "none";

impl Parser {
    fn line(&mut self, raw: &[u8]) -> Result<(), String> {
        // §Character set: tab, 0x20-0x7E and high-bit octets; newline only as the separator.
        if let Some(&c) = raw.iter().find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(if c == b'\r' {
                "a carriage return: save the file with Unix line endings (LF)".into()
            } else {
                format!("a control character (0x{c:02x}); only tab and newline are allowed")
            });
        }
        let line = std::str::from_utf8(raw).map_err(|_| "the line is not valid UTF-8")?;
        // §Structure: whitespace is ASCII space and tab only.
        let fields: Vec<&str> = line.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
        let Some((&keyword, args)) = fields.split_first() else {
            return Ok(());
        };
        if keyword.starts_with('#') {
            return Ok(());
        }
        if self.quorum_seen && keyword == "quorum" {
            return Err("a second quorum line; a policy has exactly one".into());
        }
        match keyword {
            "log" => self.log(args),
            "witness" => self.witness(args),
            "group" => self.group(args),
            "quorum" => self.quorum(args),
            other => Err(format!(
                "unknown keyword {other:?}; a line starts with log, witness, group or quorum"
            )),
        }
    }

    fn log(&mut self, args: &[&str]) -> Result<(), String> {
        let (vkey, url) = match args {
            [vkey] => (*vkey, None),
            [vkey, url] => (*vkey, Some((*url).to_string())),
            _ => return Err("a log line is `log <vkey> [<url>]`".into()),
        };
        if self.policy.logs.len() == MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} logs"));
        }
        let verifier =
            Verifier::from_key_string(vkey).map_err(|e| format!("the log's key: {e}"))?;
        if let Some(other) = self
            .policy
            .logs
            .iter()
            .find(|l| l.verifier.public_key() == verifier.public_key())
        {
            return Err(format!(
                "the log key is a duplicate of {}'s (the same public key)",
                other.verifier.name()
            ));
        }
        self.policy.logs.push(PolicyLog { verifier, url });
        Ok(())
    }

    fn witness(&mut self, args: &[&str]) -> Result<(), String> {
        let (name, vkey, url) = match args {
            [name, vkey] => (*name, *vkey, None),
            [name, vkey, url] => (*name, *vkey, Some((*url).to_string())),
            _ => return Err("a witness line is `witness <name> <vkey> [<url>]`".into()),
        };
        self.new_name(name)?;
        if self.policy.witnesses.len() == MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} witnesses"));
        }
        let verifier = CosignatureVerifier::from_key_string(vkey)
            .map_err(|e| format!("witness {name}: {e}"))?;
        if let Some(other) = self
            .policy
            .witnesses
            .iter()
            .find(|w| w.verifier.public_key() == verifier.public_key())
        {
            return Err(format!(
                "witness {name} has the same public key as witness {}; each witness is listed once",
                other.name
            ));
        }
        self.names
            .insert(name.to_string(), Ref::Witness(self.policy.witnesses.len()));
        self.policy.witnesses.push(PolicyWitness {
            name: name.to_string(),
            verifier,
            url,
        });
        Ok(())
    }

    fn group(&mut self, args: &[&str]) -> Result<(), String> {
        let [name, threshold, members @ ..] = args else {
            return Err("a group line is `group <name> all|any|<k> <member>...`".into());
        };
        if members.is_empty() {
            return Err(format!("group {name} lists no members"));
        }
        self.new_name(name)?;
        if self.policy.groups.len() == MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} groups"));
        }
        let n = members.len();
        let threshold = match *threshold {
            "all" => n,
            "any" => 1,
            k => {
                let valid = !k.is_empty()
                    && k.bytes().all(|b| b.is_ascii_digit())
                    && (k.len() == 1 || !k.starts_with('0'));
                let k = valid.then(|| k.parse::<usize>().ok()).flatten();
                match k {
                    Some(k) if (1..=n).contains(&k) => k,
                    _ => {
                        return Err(format!(
                            "group {name}: the threshold {threshold:?} must be all, any or a decimal k with 1 <= k <= {n} (the number of members)"
                        ));
                    }
                }
            }
        };
        let mut refs = Vec::with_capacity(n);
        for &m in members {
            if m == NONE {
                return Err(format!("group {name}: `none` cannot be a group member"));
            }
            let r = *self.names.get(m).ok_or_else(|| {
                format!("group {name}: {m:?} is not defined on an earlier line (define witnesses and groups before the groups that list them)")
            })?;
            if let Some(g) = self.members.get(m) {
                return Err(format!(
                    "group {name}: {m} is already a member of group {g}; each name may be listed as a member only once"
                ));
            }
            self.members.insert(m.to_string(), (*name).to_string());
            refs.push(r);
        }
        self.names
            .insert((*name).to_string(), Ref::Group(self.policy.groups.len()));
        self.policy.groups.push(Group {
            name: (*name).to_string(),
            threshold,
            members: refs,
        });
        Ok(())
    }

    fn quorum(&mut self, args: &[&str]) -> Result<(), String> {
        let [name] = args else {
            return Err("a quorum line is `quorum <name>` or `quorum none`".into());
        };
        self.policy.quorum = if *name == NONE {
            None
        } else {
            Some(*self.names.get(*name).ok_or_else(|| {
                format!(
                    "quorum {name:?}: no witness or group of that name is defined on an earlier line"
                )
            })?)
        };
        self.quorum_seen = true;
        Ok(())
    }

    fn new_name(&self, name: &str) -> Result<(), String> {
        if name == NONE {
            return Err("`none` is predefined and cannot name a witness or group".into());
        }
        if self.names.contains_key(name) {
            return Err(format!(
                "{name:?} is already defined; witnesses and groups share one namespace"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
