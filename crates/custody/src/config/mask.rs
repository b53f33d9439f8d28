//! Masking rules in config, compiled: JSONPath syntax and detector names are checked here, so a
//! bad rule stops the gateway at start-up with its location.

use serde_json_path::JsonPath;

use super::raw::{RawDetectors, RawMaskRule};
use super::{ConfigError, Resolver};
use crate::mask::{Action, PathRule, RuleSet, detect};

impl Resolver<'_> {
    pub(super) fn mask_rules(
        &self,
        key: &str,
        rules: Vec<RawMaskRule>,
        detectors: Option<RawDetectors>,
        detectors_key: &str,
        detectors_default: bool,
    ) -> Result<RuleSet, ConfigError> {
        let mut paths = Vec::new();
        let mut headers = Vec::new();
        for (i, r) in rules.into_iter().enumerate() {
            let at = |k: &str| format!("{key}.{i}.{k}");
            let target = match (r.path, r.header) {
                (Some(p), None) => {
                    let path = JsonPath::parse(&p).map_err(|e| {
                        self.err(
                            &at("path"),
                            format!("{p:?} is not an RFC 9535 JSONPath: {e}"),
                        )
                    })?;
                    Ok((p, path))
                }
                (None, Some(h)) => {
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return Err(self.err(&at("header"), format!("{h:?} is not a header name")));
                    }
                    Err(h.to_ascii_lowercase())
                }
                _ => {
                    return Err(self.err(
                        &format!("{key}.{i}"),
                        "a masking rule has either `path` (a JSONPath) or `header` (an upstream response header), not both or neither",
                    ));
                }
            };
            let action = match (r.action.as_deref().unwrap_or("redact"), r.keep) {
                ("redact", None) => Action::Redact,
                ("hmac", None) => Action::Hmac,
                ("partial", keep) => {
                    let keep = keep.unwrap_or(4);
                    if keep == 0 || keep > 64 {
                        return Err(self.err(&at("keep"), "must be between 1 and 64"));
                    }
                    Action::Partial(keep)
                }
                ("redact" | "hmac", Some(_)) => {
                    return Err(self.err(&at("keep"), "only applies to action = \"partial\""));
                }
                (other, _) => {
                    return Err(self.err(
                            &at("action"),
                            format!("{other:?} is not a masking action; use \"redact\", \"hmac\" or \"partial\""),
                        ));
                }
            };
            match target {
                Ok((source, path)) => paths.push(PathRule {
                    source,
                    path,
                    action,
                }),
                Err(header) => headers.push((header, action)),
            }
        }
        let detectors = match detectors {
            None => [detectors_default; 8],
            Some(RawDetectors::All(on)) => [on; 8],
            Some(RawDetectors::Named(names)) => {
                let known: Vec<&str> = detect::names().collect();
                let mut on = [false; 8];
                for (i, n) in names.iter().enumerate() {
                    let Some(pos) = known.iter().position(|k| k == n) else {
                        return Err(self.err(
                            &format!("{detectors_key}.{i}"),
                            format!("{n:?} is not a detector; known: {}", known.join(", ")),
                        ));
                    };
                    on[pos] = true;
                }
                on
            }
        };
        Ok(RuleSet {
            paths,
            headers,
            detectors,
        })
    }
}
