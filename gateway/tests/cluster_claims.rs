//! Cross-node claims against a real 3-node JetStream cluster: two "nodes"
//! (separate connections) racing for the same punch ids get exactly one
//! winner per id and the loser learns the winner's record id; a repeat
//! window ends with its bucket's max_age; an unreachable cluster answers
//! `Unreachable` within the timeout instead of hanging the ack.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fencegate::cluster::{Claim, Claims, ClaimsConfig, Stake};
use fencegate_testkit::NatsCluster;

fn stake(tag: u8) -> Stake {
    Stake {
        durable: false,
        verdict: 0,
        reason: 0,
        record_id: [tag; 16],
        node: u64::from(tag),
        at_ms: 1_700_000_000_000,
    }
}

/// The record id a held claim names.
fn held(c: Claim) -> Option<[u8; 16]> {
    match c {
        Claim::Held { stake, .. } => Some(stake.record_id),
        _ => None,
    }
}

/// Opens the buckets the way a node does (`PunchClaims::open` retries):
/// creating an R3 stream right after the cluster elected its meta leader
/// can outlast the 5 s request timeout on a loaded CI machine (it did,
/// 2026-12-04), so a failed open is retried, a second apart, 8 times.
async fn node(urls: &str, cfg: &ClaimsConfig) -> Claims {
    let client = async_nats::connect(urls).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut last = None;
    for _ in 0..8 {
        match Claims::open(&js, cfg).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the claims buckets did not open in 8 tries: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_claims_one_winner_per_key_windows_expire_and_outages_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(dir.path(), 3);
    let cfg = ClaimsConfig {
        replicas: 3,
        repeat_ttl: Duration::from_secs(1),
        timeout: Duration::from_millis(1_000),
        ..ClaimsConfig::default()
    };
    let a = Arc::new(node(&nats.url(0), &cfg).await);
    let b = Arc::new(node(&nats.url(1), &cfg).await);

    // A race on 200 punch ids: node A claims with record id [1; ..], B with
    // [2; ..]; per id exactly one wins and the other sees its record id.
    let mut tasks = Vec::new();
    for i in 0..200u128 {
        for (n, tag) in [(a.clone(), 1u8), (b.clone(), 2u8)] {
            tasks.push(tokio::spawn(async move {
                let t0 = fencegate::clock::instant();
                let c = n.claim_punch("acme", &i.to_be_bytes(), &stake(tag)).await;
                (i, tag, c, t0.elapsed())
            }));
        }
    }
    let mut by_id: HashMap<u128, Vec<(u8, Claim)>> = HashMap::new();
    let mut lat = Vec::new();
    for t in tasks {
        let (i, tag, c, d) = t.await.unwrap();
        by_id.entry(i).or_default().push((tag, c));
        lat.push(d);
    }
    for (i, v) in &by_id {
        let winners: Vec<u8> = v
            .iter()
            .filter(|(_, c)| *c == Claim::Won)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(winners.len(), 1, "punch {i}: {v:?}");
        let w = winners[0];
        for (tag, c) in v {
            if *tag != w {
                assert_eq!(held(*c), Some([w; 16]), "punch {i}");
            }
        }
    }
    lat.sort();
    eprintln!(
        "claim latency over {} racing claims on a 3-node R3 cluster (loopback): p50 {:?}, p99 {:?}",
        lat.len(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );

    // One claim at a time (what one punch's ack waits for), for the note.
    let mut one = Vec::new();
    for i in 1_000..1_200u128 {
        let t0 = fencegate::clock::instant();
        assert_eq!(
            a.claim_punch("acme", &i.to_be_bytes(), &stake(1)).await,
            Claim::Won
        );
        one.push(t0.elapsed());
    }
    one.sort();
    eprintln!(
        "one claim at a time: p50 {:?}, p99 {:?}",
        one[one.len() / 2],
        one[one.len() * 99 / 100]
    );

    // A repeat window: held within it, free again after max_age.
    assert_eq!(a.claim_repeat("acme", "E1", 0, &stake(7)).await, Claim::Won);
    assert_eq!(
        held(b.claim_repeat("acme", "E1", 0, &stake(8)).await),
        Some([7; 16])
    );
    // Another kind and another tenant are other windows.
    assert_eq!(b.claim_repeat("acme", "E1", 1, &stake(9)).await, Claim::Won);
    assert_eq!(
        b.claim_repeat("globex", "E1", 0, &stake(9)).await,
        Claim::Won
    );

    // A released punch id is won afresh; a settled one answers with its
    // stake (durable), and a take-over needs the holder's revision.
    let p = [0x42; 16];
    assert_eq!(a.claim_punch("acme", &p, &stake(1)).await, Claim::Won);
    a.release_punch("acme", &p).await;
    assert_eq!(b.claim_punch("acme", &p, &stake(2)).await, Claim::Won);
    let Claim::Held { stake: h, revision } = a.claim_punch("acme", &p, &stake(1)).await else {
        panic!("the punch id is held by b");
    };
    assert_eq!((h.record_id, h.durable), ([2; 16], false));
    assert!(!a.take_over_punch("acme", &p, &stake(1), revision + 7).await);
    assert!(a.take_over_punch("acme", &p, &stake(1), revision).await);
    let settled = Stake {
        durable: true,
        ..stake(1)
    };
    assert!(a.settle_punch("acme", &p, &settled).await);
    let Claim::Held { stake: h, .. } = b.claim_punch("acme", &p, &stake(2)).await else {
        panic!("the punch id is held by a");
    };
    assert_eq!(h, settled);
    let mut freed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if b.claim_repeat("acme", "E1", 0, &stake(8)).await == Claim::Won {
            freed = true;
            break;
        }
    }
    assert!(freed, "the repeat window never ended");

    // The whole cluster down: claims answer Unreachable, within the timeout.
    for i in 0..3 {
        nats.kill(i);
    }
    let t0 = fencegate::clock::instant();
    let c = a.claim_punch("acme", &[0xee; 16], &stake(1)).await;
    assert_eq!(c, Claim::Unreachable);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "an unreachable cluster held the claim for {:?}",
        t0.elapsed()
    );
}
