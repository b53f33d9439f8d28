//! Credentials by reference: a config value may name secrets instead of holding them,
//! `${env:NAME}` (an environment variable of the gateway) and `${file:PATH}` (a file's contents
//! without its final line break; relative paths are relative to the config file), mixed with
//! literal text (`"Bearer ${env:DEPLOY_TOKEN}"`). `$${` is a literal `${`.
//!
//! Errors name the reference, never a value.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Env(String),
    File(PathBuf),
}

/// A value with its references, resolved on demand (at start-up and on reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    parts: Vec<Part>,
}

impl SecretRef {
    /// A value without references.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Text(text.to_string())],
        }
    }

    /// Parses `text`; `base` is the config file's directory.
    ///
    /// # Errors
    /// An unclosed or unknown reference, or an empty name.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at..];
            if let Some(tail) = after.strip_prefix("$${") {
                literal.push_str("${");
                rest = tail;
                continue;
            }
            let Some(body) = after.strip_prefix("${") else {
                literal.push('$');
                rest = &after[1..];
                continue;
            };
            let Some(end) = body.find('}') else {
                return Err(format!(
                    "{:?} opens a reference with ${{ but never closes it with }}",
                    clip(after)
                ));
            };
            let reference = &body[..end];
            let part = match reference.split_once(':') {
                Some(("env", name)) if !name.is_empty() && !name.contains(['=', '\0']) => {
                    Part::Env(name.to_string())
                }
                Some(("file", path)) if !path.is_empty() => Part::File(base.join(path)),
                _ => {
                    return Err(format!(
                        "${{{reference}}} is not a reference: use ${{env:NAME}} or ${{file:PATH}} (write $${{ for a literal ${{)"
                    ));
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &body[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() || parts.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { parts })
    }

    /// Does it name any secret (as opposed to holding its value)?
    pub fn has_references(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Text(_)))
    }

    /// The value, read now.
    ///
    /// # Errors
    /// Which reference could not be resolved and why (never its value).
    pub fn resolve(&self) -> Result<String, String> {
        self.resolve_parts().map(|(value, _)| value)
    }

    /// The value, read now, and what each reference in it resolved to: every one of those is a
    /// secret in its own right (`"Bearer ${env:TOKEN}"` names the token, which an upstream may
    /// echo without the `Bearer `).
    ///
    /// # Errors
    /// Which reference could not be resolved and why (never its value).
    pub fn resolve_parts(&self) -> Result<(String, Vec<String>), String> {
        let mut out = String::new();
        let mut referenced = Vec::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Env(name) => match std::env::var(name) {
                    Ok(v) if !v.is_empty() => {
                        out.push_str(&v);
                        referenced.push(v);
                    }
                    Ok(_) => return Err(format!("${{env:{name}}} is empty")),
                    Err(std::env::VarError::NotPresent) => {
                        return Err(format!(
                            "${{env:{name}}} is not set in the gateway's environment"
                        ));
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        return Err(format!("${{env:{name}}} is not valid UTF-8"));
                    }
                },
                Part::File(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("${{file:{}}} cannot be read: {e}", path.display()))?;
                    let value = text
                        .strip_suffix('\n')
                        .map(|t| t.strip_suffix('\r').unwrap_or(t))
                        .unwrap_or(&text);
                    if value.is_empty() {
                        return Err(format!("${{file:{}}} is empty", path.display()));
                    }
                    out.push_str(value);
                    referenced.push(value.to_string());
                }
            }
        }
        Ok((out, referenced))
    }
}

fn clip(s: &str) -> String {
    s.chars().take(24).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_from_the_environment_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.txt"), "s3cr3t-from-file\n").unwrap();
        // cargo sets CARGO_PKG_NAME for the tests it runs (setting variables needs unsafe).
        let r = SecretRef::parse(
            "Bearer ${env:CARGO_PKG_NAME}/${file:secret.txt} $${env:X} $5",
            dir.path(),
        )
        .unwrap();
        assert!(r.has_references());
        assert_eq!(
            r.resolve().unwrap(),
            "Bearer custody/s3cr3t-from-file ${env:X} $5"
        );
        let (_, parts) = r.resolve_parts().unwrap();
        assert_eq!(parts, ["custody", "s3cr3t-from-file"]);
        let plain = SecretRef::parse("just text", dir.path()).unwrap();
        assert!(!plain.has_references());
        assert_eq!(plain.resolve().unwrap(), "just text");
    }

    #[test]
    fn bad_and_missing_references_name_the_reference_only() {
        let base = Path::new("/nonexistent-dir");
        for (text, want) in [
            ("${env:}", "${env:} is not a reference"),
            ("${vault:x}", "${vault:x} is not a reference"),
            ("abc ${env:X", "never closes it"),
        ] {
            let e = SecretRef::parse(text, base).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = SecretRef::parse("${env:CUSTODY_TEST_SURELY_UNSET_VAR}", base)
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(
            e,
            "${env:CUSTODY_TEST_SURELY_UNSET_VAR} is not set in the gateway's environment"
        );
        let e = SecretRef::parse("${file:missing.txt}", base)
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            e.starts_with("${file:/nonexistent-dir/missing.txt} cannot be read"),
            "{e}"
        );
    }
}
