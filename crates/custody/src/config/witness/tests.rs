use std::path::Path;
use std::time::Duration;

use tlog::cosignature::CosignatureSigner;

use super::super::{Config, ConfigError};
use super::WitnessMode;

fn vkey(i: u8) -> String {
    CosignatureSigner::new(&format!("w{i}.example"), [i; 32])
        .unwrap()
        .verifier()
        .to_key_string()
}

fn two_of_two() -> String {
    format!(
        "witness a {} http://127.0.0.1:7001\nwitness b {} https://witness.example/b\ngroup both all a b\nquorum both\n",
        vkey(1),
        vkey(2)
    )
}

fn config(witness: &str) -> String {
    format!(
        "[auth]\nanonymous = true\n\n[endpoints.e.upstream]\ntransport = \"http\"\nurl = \"http://127.0.0.1:1/mcp\"\n\n{witness}"
    )
}

/// Writes `policy` next to a config file in a fresh directory and parses `witness` as the
/// config's `[witness]` table.
fn parse(policy: &str, witness: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("witnesses.policy"), policy).unwrap();
    let file = dir.path().join("custody.toml");
    Config::parse(&config(witness), &file.display().to_string())
}

fn err(policy: &str, witness: &str) -> ConfigError {
    parse(policy, witness).expect_err(witness)
}

#[test]
fn defaults_and_min_interval() {
    let c = parse(
        &two_of_two(),
        "[witness]\npolicy = \"witnesses.policy\"\n[witness.witnesses.b]\nmin_interval = \"5s\"\n",
    )
    .unwrap();
    let w = c.witness.unwrap();
    assert_eq!(w.mode, WitnessMode::Required);
    assert_eq!(w.max_lag, Duration::from_secs(10));
    assert_eq!(w.timeout, Duration::from_secs(5));
    assert_eq!(w.min_interval, [Duration::ZERO, Duration::from_secs(5)]);
    assert_eq!(w.policy.witnesses().len(), 2);
    assert!(w.policy_file.ends_with("witnesses.policy"));
    let c = parse(
        &two_of_two(),
        "[witness]\npolicy = \"witnesses.policy\"\nmode = \"best_effort\"\nmax_lag = \"2s\"\ntimeout = \"1s\"\n",
    )
    .unwrap();
    let w = c.witness.unwrap();
    assert_eq!(
        (w.mode, w.max_lag, w.timeout),
        (
            WitnessMode::BestEffort,
            Duration::from_secs(2),
            Duration::from_secs(1)
        )
    );
    let none = Config::parse(&config(""), "custody.toml").unwrap();
    assert!(none.witness.is_none());
}

#[test]
fn bad_witness_tables() {
    let good = two_of_two();
    let cases: Vec<(String, &str, &str)> = vec![
        (good.clone(), "[witness]\n", "name a C2SP tlog-policy file"),
        (
            good.clone(),
            "[witness]\npolicy = \"missing.policy\"\n",
            "cannot read the witness policy",
        ),
        (
            format!("witness a {}\nquorum nobody\n", vkey(1)),
            "[witness]\npolicy = \"witnesses.policy\"\n",
            "witnesses.policy:2: quorum",
        ),
        (
            "quorum none\n".into(),
            "[witness]\npolicy = \"witnesses.policy\"\n",
            "quorum none",
        ),
        (
            format!("witness a {}\nquorum a\n", vkey(1)),
            "[witness]\npolicy = \"witnesses.policy\"\n",
            "has no URL",
        ),
        (
            format!("witness a {} http://10.0.0.1:7000\nquorum a\n", vkey(1)),
            "[witness]\npolicy = \"witnesses.policy\"\n",
            "https://",
        ),
        (
            good.clone(),
            "[witness]\npolicy = \"witnesses.policy\"\nmode = \"sometimes\"\n",
            "not a mode",
        ),
        (
            good.clone(),
            "[witness]\npolicy = \"witnesses.policy\"\nmax_lag = \"10ms\"\n",
            "between 100ms and 1h",
        ),
        (
            good.clone(),
            "[witness]\npolicy = \"witnesses.policy\"\ntimeout = \"2m\"\n",
            "between 100ms and 60s",
        ),
        (
            good.clone(),
            "[witness]\npolicy = \"witnesses.policy\"\n[witness.witnesses.c]\nmin_interval = \"1m\"\n",
            "no witness named \"c\"",
        ),
        (
            good.clone(),
            "[witness]\npolicy = \"witnesses.policy\"\n[witness.witnesses.a]\nmin_interval = \"2days\"\n",
            "at most 24h",
        ),
        (
            good.clone(),
            "[witness]\npolicy = \"witnesses.policy\"\nquorum = \"a\"\n",
            "unknown field `quorum`",
        ),
        (
            good.clone(),
            "[witness]\npolicy = \"witnesses.policy\"\n[witness.witnesses.b]\nmin_interval = \"1m\"\n",
            "needed for every quorum",
        ),
    ];
    for (policy, witness, needle) in cases {
        let e = err(&policy, witness);
        let text = e.to_string();
        assert!(text.contains(needle), "{witness:?}: {text}");
        assert!(
            e.key.as_deref().is_some_and(|k| k.starts_with("witness")),
            "{witness:?}: {text}"
        );
    }
}

#[test]
fn the_policy_path_is_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/w.policy"), two_of_two()).unwrap();
    let file = dir.path().join("etc/custody.toml");
    let c = Config::parse(
        &config("[witness]\npolicy = \"w.policy\"\n"),
        &file.display().to_string(),
    )
    .unwrap();
    assert_eq!(
        c.witness.unwrap().policy_file,
        Path::new(&dir.path().join("etc/w.policy"))
    );
}
