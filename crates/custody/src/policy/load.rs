//! Reading policy files: parse, name every policy, check annotations, validate against the
//! schema. Every problem is reported as `file:line:col: what`, all of them at once.

use std::collections::HashMap;
use std::fmt;

use cedar_policy::{Effect, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use sha2::{Digest, Sha256};

/// One policy file's name (as given in config) and text.
pub struct Source {
    pub name: String,
    pub text: String,
}

/// A problem in a policy file.
#[derive(Debug, Clone)]
pub struct PolicyError {
    pub file: String,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((l, c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found, one per line.
#[derive(Debug, Clone)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// The most distinct approvers a policy can ask for.
pub const MAX_APPROVERS: u32 = 10;

/// A validated policy set.
pub struct Loaded {
    pub set: PolicySet,
    /// Permit policies annotated `@approval("required")`, with how many distinct approvers
    /// each needs (`@min_approvals("N")`, default 1).
    pub approval: HashMap<PolicyId, u32>,
    /// SHA-256 over the files' names and texts, hex: identifies the set in the audit log.
    pub hash: String,
    pub files: Vec<String>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn from_diagnostic(file: &str, text: &str, d: &dyn Diagnostic, message: String) -> PolicyError {
    let offset = d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let message = match d.help() {
        Some(help) => format!("{message} ({help})"),
        None => message,
    };
    PolicyError {
        file: file.to_string(),
        position: offset.map(|o| line_col(text, o)),
        message,
    }
}

/// Parses and validates `sources` against `schema`.
///
/// # Errors
/// Every syntax error, duplicate or malformed annotation, and schema violation.
pub fn load(sources: &[Source], schema: &Schema) -> Result<Loaded, PolicyErrors> {
    let mut errors = Vec::new();
    let mut set = PolicySet::new();
    let mut approval = HashMap::new();
    // Where each policy is: its file and byte offset, for validation errors.
    let mut origin: HashMap<PolicyId, (usize, usize)> = HashMap::new();
    let mut hasher = Sha256::new();
    for (index, source) in sources.iter().enumerate() {
        hasher.update(source.name.as_bytes());
        hasher.update([0]);
        hasher.update(source.text.as_bytes());
        hasher.update([0]);
        let parsed: PolicySet = match source.text.parse() {
            Ok(p) => p,
            Err(e) => {
                let e: cedar_policy::ParseErrors = e;
                for one in e.iter() {
                    errors.push(from_diagnostic(
                        &source.name,
                        &source.text,
                        one,
                        one.to_string(),
                    ));
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            errors.push(PolicyError {
                file: source.name.clone(),
                position: None,
                message: "policy templates (?principal, ?resource slots) are not supported; write static policies".into(),
            });
            continue;
        }
        let mut cursor = 0;
        for policy in parsed.policies() {
            let text = policy.to_string();
            let found = source
                .text
                .get(cursor..)
                .and_then(|rest| rest.find(text.as_str()));
            let offset = match found {
                Some(o) => {
                    cursor += o + text.len();
                    cursor - text.len()
                }
                None => cursor,
            };
            let (line, col) = line_col(&source.text, offset);
            let at = |message: String| PolicyError {
                file: source.name.clone(),
                position: Some((line, col)),
                message,
            };
            let id = match policy.annotation("id") {
                Some(id) if !id.trim().is_empty() => id.to_string(),
                Some(_) => {
                    errors.push(at("@id(\"...\") must not be empty".into()));
                    continue;
                }
                None => format!("{}:{line}", source.name),
            };
            let id = PolicyId::new(id);
            let min_approvals = match policy.annotation("min_approvals") {
                None => Some(1),
                Some(n) => match n.parse::<u32>() {
                    Ok(n @ 1..=MAX_APPROVERS) => Some(n),
                    _ => {
                        errors.push(at(format!(
                            "@min_approvals({n:?}) must be a whole number from 1 to {MAX_APPROVERS}"
                        )));
                        None
                    }
                },
            };
            if policy.annotation("min_approvals").is_some()
                && policy.annotation("approval").is_none()
            {
                errors.push(at(
                    "@min_approvals only applies with @approval(\"required\") on the same policy"
                        .into(),
                ));
            }
            match policy.annotation("approval") {
                None => {}
                Some("required") if policy.effect() == Effect::Permit => {
                    approval.insert(id.clone(), min_approvals.unwrap_or(1));
                }
                Some("required") => errors.push(at(
                    "@approval(\"required\") only applies to permit policies: a forbid cannot be approved".into(),
                )),
                Some(other) => errors.push(at(format!(
                    "@approval({other:?}) is not understood; the only form is @approval(\"required\")"
                ))),
            }
            if origin.contains_key(&id) {
                errors.push(at(format!("policy id \"{id}\" is used twice")));
                continue;
            }
            origin.insert(id.clone(), (index, offset));
            if let Err(e) = set.add(policy.new_id(id)) {
                errors.push(at(e.to_string()));
            }
        }
    }
    // Whatever parsed is validated too, so one run reports every problem.
    {
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let (index, start) = origin.get(e.policy_id()).copied().unwrap_or((0, 0));
            let source = &sources[index];
            let mut pe = from_diagnostic(&source.name, &source.text, e, e.to_string());
            if pe.position.is_none() {
                pe.position = Some(line_col(&source.text, start));
            }
            errors.push(pe);
        }
        for w in result.validation_warnings() {
            tracing::warn!("policy {}: {w}", w.policy_id());
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, a.position).cmp(&(&b.file, b.position)));
        return Err(PolicyErrors(errors));
    }
    Ok(Loaded {
        set,
        approval,
        hash: hex::encode(hasher.finalize()),
        files: sources.iter().map(|s| s.name.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;

    fn schema() -> Schema {
        let text = crate::policy::schema::text(&AuthConfig::anonymous());
        Schema::from_cedarschema_str(&text).unwrap().0
    }

    fn errors(files: &[(&str, &str)]) -> Vec<String> {
        let sources: Vec<Source> = files
            .iter()
            .map(|(n, t)| Source {
                name: (*n).into(),
                text: (*t).into(),
            })
            .collect();
        match load(&sources, &schema()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn good_policies_get_ids_and_approvals() {
        let sources = [Source {
            name: "a.cedar".into(),
            text: "permit(principal, action, resource);\n\n@id(\"x\")\n@approval(\"required\")\npermit(principal, action == Action::\"tools/call\", resource);\n".into(),
        }];
        let loaded = load(&sources, &schema()).unwrap();
        let ids: Vec<String> = loaded.set.policies().map(|p| p.id().to_string()).collect();
        assert!(
            ids.contains(&"a.cedar:1".to_string()) && ids.contains(&"x".to_string()),
            "{ids:?}"
        );
        assert_eq!(loaded.approval.get(&PolicyId::new("x")), Some(&1));
        assert_eq!(loaded.hash.len(), 64);
        let sources = [Source {
            name: "b.cedar".into(),
            text: "@id(\"two\")\n@approval(\"required\")\n@min_approvals(\"2\")\npermit(principal, action, resource);\n".into(),
        }];
        let loaded = load(&sources, &schema()).unwrap();
        assert_eq!(loaded.approval.get(&PolicyId::new("two")), Some(&2));
    }

    #[test]
    fn min_approvals_must_be_a_small_count_on_an_approval_policy() {
        for bad in ["0", "11", "two", "-1", ""] {
            let e = errors(&[(
                "a.cedar",
                &format!(
                    "@approval(\"required\")\n@min_approvals({bad:?})\npermit(principal, action, resource);\n"
                ),
            )]);
            assert_eq!(
                e,
                [format!(
                    "a.cedar:1:1: @min_approvals({bad:?}) must be a whole number from 1 to 10"
                )]
            );
        }
        let e = errors(&[(
            "a.cedar",
            "\n@min_approvals(\"2\")\npermit(principal, action, resource);\n",
        )]);
        assert_eq!(
            e,
            [
                "a.cedar:2:1: @min_approvals only applies with @approval(\"required\") on the same policy"
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let e = errors(&[("a.cedar", "permit(principal, action, resource)\n")]);
        assert!(e[0].starts_with("a.cedar:"), "{e:?}");
        let e = errors(&[
            (
                "a.cedar",
                "@id(\"p\")\npermit(principal, action, resource);\n",
            ),
            (
                "b.cedar",
                "\n@id(\"p\")\nforbid(principal, action, resource);\n",
            ),
        ]);
        assert_eq!(e, ["b.cedar:2:1: policy id \"p\" is used twice"]);
        let e = errors(&[(
            "a.cedar",
            "@approval(\"required\")\nforbid(principal, action, resource);\n",
        )]);
        assert!(e[0].contains("only applies to permit"), "{e:?}");
        let e = errors(&[(
            "a.cedar",
            "permit(principal == ?principal, action, resource);\n",
        )]);
        assert!(e[0].contains("templates"), "{e:?}");
        let e = errors(&[(
            "a.cedar",
            "permit(principal, action == Action::\"tools/delete\", resource);\n",
        )]);
        assert!(
            e[0].starts_with("a.cedar:1:") && e[0].contains("tools/delete"),
            "{e:?}"
        );
        let e = errors(&[(
            "a.cedar",
            "// caf\u{e9} \u{2615}\npermit(principal, action, resource) when { principal.nope == \"\u{e9}\" };\n",
        )]);
        assert!(
            e[0].starts_with("a.cedar:2:") && e[0].contains("nope"),
            "{e:?}"
        );
        let e = errors(&[(
            "a.cedar",
            "permit(principal, action, resource) when { context.nope == 1 };\n",
        )]);
        assert!(
            e[0].starts_with("a.cedar:1:") && e[0].contains("nope"),
            "{e:?}"
        );
    }
}

#[cfg(test)]
mod docs {
    use super::*;
    use crate::config::AuthConfig;

    fn cedar_blocks(doc: &str) -> (String, usize) {
        let mut text = String::new();
        let mut blocks = 0;
        let mut inside = false;
        for line in doc.lines() {
            match (inside, line.trim()) {
                (false, "```cedar") => {
                    inside = true;
                    blocks += 1;
                }
                (true, "```") => inside = false,
                (true, _) => {
                    text.push_str(line);
                    text.push('\n');
                }
                _ => {}
            }
        }
        (text, blocks)
    }

    /// The worked examples in docs/policy.md, docs/approvals.md and the README validate against
    /// the schema.
    #[test]
    fn the_documented_policies_are_valid() {
        let schema_text = crate::policy::schema::text(&AuthConfig::anonymous());
        let schema = Schema::from_cedarschema_str(&schema_text).unwrap().0;
        for (name, doc, at_least) in [
            (
                "docs/policy.md",
                include_str!("../../../../docs/policy.md"),
                10,
            ),
            ("README.md", include_str!("../../../../README.md"), 1),
            (
                "docs/approvals.md",
                include_str!("../../../../docs/approvals.md"),
                2,
            ),
        ] {
            let (text, blocks) = cedar_blocks(doc);
            assert!(blocks >= at_least, "{name}: found {blocks} cedar blocks");
            let sources = [Source {
                name: name.into(),
                text,
            }];
            if let Err(e) = load(&sources, &schema) {
                panic!("{e}");
            }
        }
    }
}
