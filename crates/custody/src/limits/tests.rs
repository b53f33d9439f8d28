//! The bounds with an injected clock: rates, their key tables under many keys, gauges and
//! permits, the tally's window, the connection table's eviction and timeouts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

fn rate(per_second: u32, burst: u32, keys: usize) -> (KeyedRate<u32>, Instant) {
    let t0 = Instant::now();
    (
        KeyedRate::new(
            Limit::AddressRefusals,
            Rate::new(per_second, burst),
            keys,
            t0,
        ),
        t0,
    )
}

#[test]
fn a_burst_then_the_rate_then_recovery() {
    let (r, t0) = rate(5, 3, 100);
    for _ in 0..3 {
        assert!(r.take_at(&1, t0).is_ok());
    }
    let e = r.take_at(&1, t0).unwrap_err();
    assert_eq!(e.limit, Limit::AddressRefusals);
    assert_eq!(e.retry_after, Some(Duration::from_millis(200)));
    assert_eq!(e.retry_after_secs(), 1);
    // One more every 200 ms.
    assert!(r.take_at(&1, t0 + Duration::from_millis(200)).is_ok());
    assert!(r.take_at(&1, t0 + Duration::from_millis(200)).is_err());
    // Other keys are unaffected.
    assert!(r.take_at(&2, t0).is_ok());
    // A full recovery restores the burst.
    let later = t0 + Duration::from_secs(10);
    for _ in 0..3 {
        assert!(r.take_at(&1, later).is_ok());
    }
    assert!(r.take_at(&1, later).is_err());
}

#[test]
fn check_charges_nothing_and_charging_past_the_burst_does_not_lengthen_the_block() {
    let (r, t0) = rate(1, 2, 100);
    assert!(r.check_at(&7, t0).is_ok());
    assert!(r.check_at(&7, t0).is_ok(), "a check alone charges nothing");
    r.charge_at(7, t0);
    r.charge_at(7, t0);
    assert!(r.check_at(&7, t0).is_err());
    for _ in 0..1000 {
        r.charge_at(7, t0);
    }
    assert!(
        r.check_at(&7, t0 + Duration::from_secs(1)).is_ok(),
        "a second after the burst is spent, one more conforms however much was charged"
    );
}

#[test]
fn many_keys_never_grow_the_table_past_its_cap_and_share_one_budget_past_it() {
    let (r, t0) = rate(1, 1, 1024);
    for k in 0..100_000u32 {
        let _ = r.take_at(&k, t0);
    }
    assert!(r.len() <= 1024, "{} keys held", r.len());
    // Past the cap, new keys share the overflow budget: it is spent.
    assert!(r.take_at(&200_000, t0).is_err());
    // A second later the table sweeps the keys that recovered and takes new ones again.
    let later = t0 + Duration::from_secs(2);
    assert!(r.take_at(&300_000, later).is_ok());
    assert_eq!(r.len(), 1, "the recovered keys were swept");
}

#[test]
fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(address_key(a), address_key(b));
    assert_ne!(address_key(a), address_key(c));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
    assert_eq!(address_key(mapped), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    assert_eq!(
        address_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        "::".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn gauges_count_permits_and_give_places_back_on_drop() {
    let g = Gauge::new(Limit::EndpointSessions, 2);
    let a = g.acquire().unwrap();
    let b = g.acquire().unwrap();
    let e = g.acquire().unwrap_err();
    assert_eq!(e, Exceeded::new(Limit::EndpointSessions, 2));
    drop(a);
    assert_eq!(g.held(), 1);
    let k = KeyedGauge::new(Limit::PrincipalSessions, 1);
    let alice: Arc<str> = "alice".into();
    let both = k.acquire(&alice).unwrap().and(b);
    assert!(k.acquire(&alice).is_err());
    assert!(k.acquire(&"bob".into()).is_ok(), "each key has its own cap");
    assert_eq!(k.keys(), 1, "a key with nothing held is forgotten");
    drop(both);
    assert_eq!((g.held(), k.held("alice"), k.keys()), (0, 0, 0));
}

#[test]
fn a_tally_counts_every_refusal_and_bounds_its_keys() {
    let t: Tally<(Option<u32>, &str), u32> = Tally::new(3, |k| (None, k.1));
    for addr in 0..1000u32 {
        t.add((Some(addr), "bad_signature"), || addr);
        t.add((Some(addr), "bad_signature"), || {
            unreachable!("one sample a key")
        });
    }
    let counted = t.drain();
    assert_eq!(counted.len(), 4, "three keys and one folded");
    assert_eq!(
        counted.iter().map(|c| c.count).sum::<u64>(),
        2000,
        "nothing is lost"
    );
    assert_eq!(counted[0].key, (Some(0), "bad_signature"));
    assert_eq!(counted[0].count, 2);
    let folded = &counted[3];
    assert!(folded.folded);
    assert_eq!(
        (folded.key, folded.count, folded.sample),
        ((None, "bad_signature"), 1994, 3)
    );
    assert!(t.is_empty(), "drained");
}

fn table(max: usize) -> (Arc<Connections>, Instant) {
    let c = Connections::new(ConnLimits {
        max,
        idle_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(10),
    });
    (c, Instant::now())
}

#[test]
fn a_full_table_closes_the_connection_idle_longest_and_refuses_when_none_is() {
    let (c, t0) = table(2);
    let first = c.open_at(t0).unwrap();
    let second = c.open_at(t0 + Duration::from_millis(1)).unwrap();
    let busy = second.conn().begin();
    let third = c.open_at(t0 + Duration::from_millis(2)).unwrap();
    assert_eq!(first.conn().closed(), Some(conns::Closed::Evicted));
    assert!(first.conn().closing().is_cancelled());
    assert_eq!(c.len(), 2);
    let _busy3 = third.conn().begin();
    let refused = c.open_at(t0 + Duration::from_millis(3)).unwrap_err();
    assert_eq!(refused.limit, Limit::Connections);
    drop(busy);
    assert!(c.open_at(t0 + Duration::from_millis(4)).is_ok());
    assert_eq!(second.conn().closed(), Some(conns::Closed::Evicted));
}

#[test]
fn idle_connections_and_slow_heads_time_out() {
    let (c, t0) = table(10);
    let idle = c.open_at(t0).unwrap();
    let slow = c.open_at(t0).unwrap();
    let working = c.open_at(t0).unwrap();
    let _request = working.conn().begin();
    slow.conn().note_read();
    assert_eq!(c.reap_at(t0 + Duration::from_secs(5)), (0, 0));
    assert_eq!(c.reap_at(t0 + Duration::from_secs(11)), (0, 1));
    assert_eq!(slow.conn().closed(), Some(conns::Closed::HeaderTimeout));
    assert_eq!(c.reap_at(t0 + Duration::from_secs(61)), (1, 0));
    assert_eq!(idle.conn().closed(), Some(conns::Closed::Idle));
    assert_eq!(
        working.conn().closed(),
        None,
        "a request in progress keeps it"
    );
}
