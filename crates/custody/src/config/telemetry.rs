//! `[telemetry]`: OpenTelemetry traces over OTLP (HTTP, protobuf). Each setting falls back to
//! the standard `OTEL_*` environment variable; without an endpoint from either, no trace is
//! made and the relay pays nothing for tracing.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Resolver};

/// `[telemetry]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP/HTTP traces URL, e.g. `http://collector:4318/v1/traces`. Default:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    pub endpoint: Option<String>,
    /// Headers sent with every export; values may be references (`${env:NAME}`). Default:
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`,
    /// `parentbased_always_off` or `parentbased_traceidratio`. Default: `OTEL_TRACES_SAMPLER`,
    /// else `parentbased_always_on`.
    pub sampler: Option<String>,
    /// The ratio of the `*traceidratio` samplers (0 to 1). Default: `OTEL_TRACES_SAMPLER_ARG`,
    /// else 1.
    pub sampler_arg: Option<f64>,
    /// `service.name`. Default: `OTEL_SERVICE_NAME`, else `custody`.
    pub service_name: Option<String>,
    /// Put each message on its span: `none` (default) or `masked` (the log's masked copy, as
    /// `mcp.request.body` / `mcp.response.body` events, at most 4 KiB each).
    pub payloads: Option<String>,
}

/// Which sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBased(&'static Sampling),
}

/// `[telemetry]`, validated; `None` when no endpoint is configured.
#[derive(Clone)]
pub struct TelemetryConfig {
    pub endpoint: String,
    /// Resolved values; never printed.
    pub headers: Vec<(String, String)>,
    pub sampler: Sampling,
    pub service_name: String,
    /// Whether spans carry the masked copy of each message.
    pub masked_payloads: bool,
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("TelemetryConfig")
            .field("endpoint", &self.endpoint)
            .field("headers (values hidden)", &names)
            .field("sampler", &self.sampler)
            .field("service_name", &self.service_name)
            .field("masked_payloads", &self.masked_payloads)
            .finish()
    }
}

const ON: Sampling = Sampling::AlwaysOn;
const OFF: Sampling = Sampling::AlwaysOff;

/// The environment as the resolver reads it (a parameter, for tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn parse_sampler(name: &str, arg: f64) -> Option<Sampling> {
    // A ratio sampler behind `ParentBased` needs a 'static inner value: leak the one ratio a
    // configuration has (once per start).
    let ratio = || -> &'static Sampling { Box::leak(Box::new(Sampling::Ratio(arg))) };
    Some(match name {
        "always_on" => ON,
        "always_off" => OFF,
        "traceidratio" => Sampling::Ratio(arg),
        "parentbased_always_on" => Sampling::ParentBased(&ON),
        "parentbased_always_off" => Sampling::ParentBased(&OFF),
        "parentbased_traceidratio" => Sampling::ParentBased(ratio()),
        _ => return None,
    })
}

/// `k=v,k2=v2` (values percent-decoded), as the OTLP exporter specification writes headers.
fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                percent_encoding::percent_decode_str(v.trim())
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

impl Resolver<'_> {
    pub(super) fn telemetry(
        &self,
        raw: RawTelemetry,
        env: Env<'_>,
    ) -> Result<Option<TelemetryConfig>, ConfigError> {
        let endpoint = match raw.endpoint {
            Some(e) => e,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|v| !v.is_empty()) {
                Some(e) => e,
                None => match env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.is_empty()) {
                    Some(base) => format!("{}/v1/traces", base.trim_end_matches('/')),
                    None => return Ok(None),
                },
            },
        };
        match url::Url::parse(&endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(self.err(
                    "telemetry.endpoint",
                    format!(
                        "{endpoint:?} is not an http(s) URL; give the collector's OTLP/HTTP traces URL, e.g. \"http://otel-collector:4318/v1/traces\""
                    ),
                ));
            }
        }
        let mut headers = Vec::new();
        for (k, v) in &raw.headers {
            let key = format!("telemetry.headers.{k}");
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(self.err(&key, format!("{k:?} is not a header name")));
            }
            headers.push((k.clone(), self.secret(&key, None, v)?.1));
        }
        if raw.headers.is_empty() {
            let text = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
                .unwrap_or_default();
            headers = parse_headers(&text);
        }
        let arg = match raw.sampler_arg {
            Some(a) => a,
            None => match env("OTEL_TRACES_SAMPLER_ARG") {
                Some(text) => text.trim().parse().map_err(|_| {
                    self.err(
                        "telemetry.sampler_arg",
                        format!("OTEL_TRACES_SAMPLER_ARG={text:?} is not a number from 0 to 1"),
                    )
                })?,
                None => 1.0,
            },
        };
        if !(0.0..=1.0).contains(&arg) {
            return Err(self.err(
                "telemetry.sampler_arg",
                format!("{arg} is not a ratio from 0 to 1"),
            ));
        }
        let name = raw
            .sampler
            .or_else(|| env("OTEL_TRACES_SAMPLER"))
            .unwrap_or_else(|| "parentbased_always_on".into());
        let sampler = parse_sampler(&name, arg).ok_or_else(|| {
            self.err(
                "telemetry.sampler",
                format!(
                    "{name:?} is not a sampler: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ),
            )
        })?;
        let masked_payloads = match raw.payloads.as_deref() {
            None | Some("none") => false,
            Some("masked") => true,
            Some(other) => {
                return Err(self.err(
                    "telemetry.payloads",
                    format!(
                        "{other:?}: use \"none\" or \"masked\" (spans never carry a message as sent)"
                    ),
                ));
            }
        };
        Ok(Some(TelemetryConfig {
            endpoint,
            headers,
            sampler,
            service_name: raw
                .service_name
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| "custody".into()),
            masked_payloads,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, env: &[(&str, &str)]) -> Result<Option<TelemetryConfig>, ConfigError> {
        let raw: RawTelemetry = toml::from_str(text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Resolver {
            text,
            file: "t.toml",
        }
        .telemetry(raw, &lookup)
    }

    #[test]
    fn without_an_endpoint_there_are_no_traces() {
        assert!(resolve("", &[]).unwrap().is_none());
    }

    #[test]
    fn the_standard_environment_fills_what_the_file_leaves_out() {
        let c = resolve(
            "",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20x,x-team=ci",
                ),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_SERVICE_NAME", "custody-prod"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            c.headers,
            [
                ("authorization".to_string(), "Bearer x".to_string()),
                ("x-team".to_string(), "ci".to_string())
            ]
        );
        assert_eq!(c.sampler, Sampling::ParentBased(&Sampling::Ratio(0.25)));
        assert_eq!(c.service_name, "custody-prod");
        // The file wins over the environment.
        let c = resolve(
            "endpoint = \"https://otel.example/v1/traces\"\nsampler = \"always_off\"",
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:4318/v1/traces",
            )],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "https://otel.example/v1/traces");
        assert_eq!(c.sampler, Sampling::AlwaysOff);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let e = resolve("endpoint = \"collector:4318\"", &[]).unwrap_err();
        assert!(e.to_string().contains("is not an http(s) URL"), "{e}");
        let e = resolve("endpoint = \"http://c:4318\"\nsampler = \"sometimes\"", &[]).unwrap_err();
        assert!(e.to_string().contains("is not a sampler"), "{e}");
        let e = resolve("endpoint = \"http://c:4318\"\nsampler_arg = 2.0", &[]).unwrap_err();
        assert!(e.to_string().contains("not a ratio"), "{e}");
        let e = resolve("endpoint = \"http://c:4318\"\npayloads = \"all\"", &[]).unwrap_err();
        assert!(e.to_string().contains("use \"none\" or \"masked\""), "{e}");
    }
}
