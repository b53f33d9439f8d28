//! Issue 13 (a flood cannot fill the disk): a failing store logs one error per change of
//! state, not one line per refused batch. The attack: a full disk under load made the sequencer
//! log about 1,100 lines a second, on the disk the log itself may be on.
//!
//! Its own test binary: it counts every log event of the process with a global subscriber.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use custody::audit::{Audit, Draft, Kind};
use custody::config::{AuditConfig, Durability};
use custody::store::{Row, Store, StoreError, StoredCheckpoint};
use tlog::compact::Node;
use tlog::{CompactRange, Signer};
use tracing_subscriber::layer::SubscriberExt;

/// Counts events at WARN or above.
struct Count(Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
            let mut text = String::new();
            struct V<'a>(&'a mut String);
            impl tracing::field::Visit for V<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
            event.record(&mut V(&mut text));
            self.1.lock().unwrap().push(text);
        }
    }
}

/// A store that fails every commit while `full` is set, as a full disk does.
#[derive(Clone, Default)]
struct FullDisk {
    full: Arc<AtomicBool>,
    state: Arc<Mutex<CompactRange>>,
}

impl Store for FullDisk {
    fn append(
        &mut self,
        _first: u64,
        _rows: &[Row],
        _nodes: &[Node],
        state: &CompactRange,
    ) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Inconsistent(
                "database or disk is full (injected)".into(),
            ));
        }
        *self.state.lock().unwrap() = state.clone();
        Ok(())
    }

    fn state(&mut self) -> Result<CompactRange, StoreError> {
        Ok(self.state.lock().unwrap().clone())
    }

    fn put_checkpoint(&mut self, _: &StoredCheckpoint) -> Result<(), StoreError> {
        Ok(())
    }

    fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(None)
    }

    fn entry_version(&mut self) -> Result<Option<u8>, StoreError> {
        Ok(Some(tlog::entry::V2))
    }

    fn set_entry_version(&mut self, _: u8) -> Result<(), StoreError> {
        Ok(())
    }

    fn scan(
        &mut self,
        from: u64,
        to: u64,
        _: bool,
        _: &mut custody::store::ScanFn<'_>,
    ) -> Result<(), StoreError> {
        // Only ever asked about an empty log here.
        match from..to {
            r if r.is_empty() => Ok(()),
            _ => Err(StoreError::NotFound(from)),
        }
    }
}

#[tokio::test]
async fn a_full_disk_logs_one_error_and_one_recovery_not_a_line_per_batch() {
    let events = Arc::new(AtomicUsize::new(0));
    let lines = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Count(events.clone(), lines.clone())),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        durability: Durability::Fsync,
        origin: None,
        key_file: dir.path().join("log.key"),
        checkpoint_interval: std::time::Duration::from_secs(60),
        heartbeat_interval: std::time::Duration::from_secs(60),
        scrub_interval: None,
        retention: None,
        erasers: Vec::new(),
        tiles_prefix: "/log".into(),
        tiles_public: true,
        tiles_public_set: false,
        predecessor: None,
        store: None,
    };
    let store = FullDisk::default();
    store.full.store(true, Ordering::SeqCst);
    let signer = Signer::new("test/log", [7; 32]).unwrap();
    let audit = Audit::with_store(store.clone(), signer, true, dir.path(), &config)
        .unwrap()
        .audit;
    // 500 calls, one after the other: 500 refused batches.
    for n in 0..500 {
        let d = Draft::gateway(Kind::Heartbeat, "", format!("{{\"n\":{n}}}"));
        assert!(audit.append(d).await.is_err(), "a full disk refuses");
    }
    let while_failing = events.load(Ordering::SeqCst);
    store.full.store(false, Ordering::SeqCst);
    let d = Draft::gateway(Kind::Heartbeat, "", "{}".into());
    audit.append(d).await.unwrap();
    let lines = lines.lock().unwrap().clone();
    assert_eq!(
        while_failing, 1,
        "one error while failing, not one per batch: {lines:#?}"
    );
    assert_eq!(lines.len(), 2, "then one recovery line: {lines:#?}");
    assert!(lines[0].contains("disk is full"), "{}", lines[0]);
    assert!(
        lines[1].contains("works again") && lines[1].contains("500 commits (500 entries)"),
        "{}",
        lines[1]
    );
}
