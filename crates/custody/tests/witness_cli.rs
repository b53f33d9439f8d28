//! `custody witness keygen|serve` and `custody receipt verify --witness-policy` as a user
//! runs them: separate processes, their own data directories.

mod witness_common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tlog::proof::{MemoryStore, inclusion_proof};
use tlog::{InclusionReceipt, Note};
use witness_common::*;

fn custody() -> Command {
    Command::new(env!("CARGO_BIN_EXE_custody"))
}

fn keygen(dir: &Path, name: &str) -> String {
    let out = custody()
        .args(["witness", "keygen", "--data"])
        .arg(dir)
        .args(["--name", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name}+")))
        .unwrap_or_else(|| panic!("no verifier key in {stdout}"))
        .to_string()
}

/// A `custody witness serve` child; returns it and its URL (read from its first line).
fn serve(args: &[&str]) -> (Child, String) {
    let mut child = custody()
        .args(["witness", "serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    // Keep reading: a closed pipe would end the witness at its next line.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = first
        .trim()
        .strip_prefix("custody witness listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    (child, url)
}

fn stop(mut child: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the witness exited with {status}");
}

#[test]
fn keygen_makes_a_private_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("w");
    let vkey = keygen(&data, "w.example/1");
    assert!(tlog::cosignature::CosignatureVerifier::from_key_string(&vkey).is_ok());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data.join("witness.key")), 0o600);
    assert_eq!(mode(&data), 0o700);
    let again = custody()
        .args(["witness", "keygen", "--data"])
        .arg(&data)
        .args(["--name", "w.example/1"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = custody()
        .args(["witness", "keygen", "--data"])
        .arg(dir.path().join("x"))
        .args(["--name", "has space"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    // serve refuses without an accepted log, and a key others can read.
    let out = custody()
        .args(["witness", "serve", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accept"));
    std::fs::set_permissions(
        data.join("witness.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let log = Log::new();
    let out = custody()
        .args(["witness", "serve", "--data"])
        .arg(&data)
        .args(["--accept", &log.verifier().to_key_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

/// Two witness processes, one from flags and one from a config file; a restart keeps state;
/// a receipt's cosigned checkpoint verifies offline against the policy, and fails against a
/// policy its cosignatures do not meet.
#[tokio::test]
async fn witness_processes_and_offline_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::new();
    log.append(9);
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let a_key = keygen(&a_dir, "a.witness.example");
    let b_key = keygen(&b_dir, "b.witness.example");
    let (a, a_url) = serve(&[
        "--data",
        a_dir.to_str().unwrap(),
        "--accept",
        &log.verifier().to_key_string(),
    ]);
    let config = tmp.path().join("b.toml");
    std::fs::write(
        &config,
        format!(
            "data = \"b\"\naccept = [\"{}\"]\n",
            log.verifier().to_key_string()
        ),
    )
    .unwrap();
    let (b, b_url) = serve(&["--config", config.to_str().unwrap()]);
    let p = policy(
        &[("a", &a_key, &a_url), ("b", &b_key, &b_url)],
        "group both all a b\nquorum both\n",
    );
    let witnesses = client(p.clone(), Duration::from_secs(5));
    let s = witnesses
        .submit(&log.checkpoint(), log.proofs())
        .await
        .unwrap();
    assert!(s.quorum, "{:?}", s.outcomes);
    let cosigned = s.cosigned_note(&log.checkpoint());

    // A receipt for entry 4 with the cosigned checkpoint.
    let leaves = log.leaves.lock().unwrap().clone();
    let receipt = InclusionReceipt {
        extra: Some(leaves[4].0.to_vec()),
        index: 4,
        path: inclusion_proof(&MemoryStore(&leaves), 4, 9).unwrap(),
        checkpoint: cosigned.clone(),
    };
    let proof = tmp.path().join("proof.txt");
    std::fs::write(&proof, receipt.encode()).unwrap();
    let policy_file = tmp.path().join("witnesses.policy");
    std::fs::write(
        &policy_file,
        format!(
            "log {}\nwitness a {a_key}\nwitness b {b_key}\ngroup both all a b\nquorum both\n",
            log.verifier().to_key_string()
        ),
    )
    .unwrap();
    let verify = |policy: &Path, proof: &Path| {
        custody()
            .args([
                "receipt",
                "verify",
                "--key",
                &log.verifier().to_key_string(),
            ])
            .arg("--witness-policy")
            .arg(policy)
            .arg(proof)
            .output()
            .unwrap()
    };
    let out = verify(&policy_file, &proof);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cosigned by a at"), "{stdout}");
    // A policy that needs a third witness is not met by these cosignatures.
    let c_key = tlog::cosignature::CosignatureSigner::new("c.witness.example", [3; 32])
        .unwrap()
        .verifier()
        .to_key_string();
    let stricter = tmp.path().join("stricter.policy");
    std::fs::write(
        &stricter,
        format!("witness a {a_key}\nwitness b {b_key}\nwitness c {c_key}\ngroup all3 all a b c\nquorum all3\n"),
    )
    .unwrap();
    let out = verify(&stricter, &proof);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not met") && stderr.contains("from c"),
        "{stderr}"
    );
    // The same receipt without its cosignatures fails the policy.
    let bare = InclusionReceipt {
        checkpoint: log.checkpoint(),
        ..receipt.clone()
    };
    std::fs::write(&proof, bare.encode()).unwrap();
    let out = verify(&policy_file, &proof);
    assert!(!out.status.success());
    // A cosignature moved onto a rewritten checkpoint does not count.
    let forged_cp = log.rewritten(4).checkpoint();
    let moved = Note {
        text: Note::parse(forged_cp.as_bytes()).unwrap().text,
        signatures: Note::parse(cosigned.as_bytes()).unwrap().signatures,
    };
    let forged = InclusionReceipt {
        checkpoint: moved.encode(),
        ..receipt
    };
    std::fs::write(&proof, forged.encode()).unwrap();
    assert!(!verify(&policy_file, &proof).status.success());

    // Restart witness a: it still refuses to go back.
    stop(a);
    let (a, a_url) = serve(&[
        "--data",
        a_dir.to_str().unwrap(),
        "--accept",
        &log.verifier().to_key_string(),
    ]);
    let r = reqwest::Client::new()
        .post(format!("{a_url}/add-checkpoint"))
        .body(log.truncated(3).body(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.text().await.unwrap(), "9\n");
    stop(a);
    stop(b);
}
