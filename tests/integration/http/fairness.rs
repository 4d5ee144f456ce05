//! One tenant's policy cannot slow the others: a hostile tenant whose
//! policy spins until it is stopped, at as many requests as a busy benign
//! tenant sends, may slow another tenant's reads at most twice as much as
//! the benign load does (measured side by side in one run, the two loads
//! alternated in rounds).

use std::time::{Duration, Instant};

use super::{TestServer, client, put, sqlite_server};
use crate::support::data;

/// Requests each load keeps in flight.
const CLIENTS: usize = 24;
/// Reads measured per phase.
const SAMPLES: usize = 20;
/// Rounds of the two phases, alternated so that a burst of other work on
/// the machine (other tests) falls on both alike.
const ROUNDS: usize = 3;

/// `CLIENTS` clients putting small bodies to `org`, each again as soon as
/// it is answered, until the returned guard is dropped.
fn load(s: &TestServer, org: &str) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|i| {
            let url = s.objects(org);
            tokio::spawn(async move {
                let c = client();
                for n in 0u32.. {
                    let body = format!("client {i} request {n}").into_bytes();
                    let _ = c.put(&url).body(body).timeout(Duration::from_secs(30)).send().await;
                }
            })
        })
        .collect()
}

/// `SAMPLES` reads of `url`, one after another: how long each took.
async fn reads(url: &str) -> Vec<Duration> {
    let c = client();
    let mut took = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let r = c.get(url).timeout(Duration::from_secs(30)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        took.push(started.elapsed());
    }
    took
}

fn median(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took[took.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_tenant_slows_others_no_more_than_twice_a_busy_one() {
    let s = sqlite_server(|c| {
        let hostile = crate::sandbox::guest("hostile").display().to_string();
        c.tenants.insert("loop".into(), [("policy".to_string(), hostile)].into());
    })
    .await;
    let sha = put(&s, "acme", &data(4096, 7)).await["sha256"].as_str().unwrap().to_string();
    let url = format!("{}/{sha}", s.objects("acme"));
    reads(&url).await; // warm

    let (mut beside_busy, mut beside_loop) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for org in ["busy", "loop"] {
            let clients = load(&s, org);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let took = reads(&url).await;
            if org == "busy" { &mut beside_busy } else { &mut beside_loop }.extend(took);
            for c in clients {
                c.abort();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let medians = [median(beside_busy), median(beside_loop)];
    let (benign, hostile) = (medians[0], medians[1]);
    eprintln!("acme's median read: {benign:?} beside a busy tenant, {hostile:?} beside a hostile one");
    // A floor of 2 ms keeps sub-millisecond noise from deciding.
    let allowed = benign.max(Duration::from_millis(2)) * 2;
    assert!(hostile <= allowed, "beside a hostile tenant {hostile:?}, beside a busy one {benign:?}");
    // The hostile policy was in force: a put of its tenant runs until it
    // is stopped at its limits, and stores nothing. (With the CPU share
    // lifted, COFFER_POLICY_CPU_SHARE=10000, the median read beside it was
    // 267 ms against 3.5 ms beside the busy tenant.)
    let r = client().put(s.objects("loop")).body("x").timeout(Duration::from_secs(60)).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(super::json(r).await["error"], "policy");
    assert!(s.coffer.list("loop", None, 10).await.unwrap().is_empty());
}
