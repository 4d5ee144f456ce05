//! The guest's cost: one policy decision on a warm instance and on a
//! fresh one.

use std::path::Path;
use std::time::Instant;

use coffer::{Coffer, Config, Content};

use crate::Plan;
use crate::support::{median, percentile};

pub(crate) async fn guest_overhead(plan: &Plan, dir: &Path) {
    let config = Config {
        database_url: Some(format!("sqlite:{}", dir.join("guest.db").display())),
        cache_dir: Some(dir.join("cache")),
        ..Config::default()
    };
    let coffer = Coffer::open(config).await.unwrap();
    let info = coffer.put("acme", Content::from_bytes("decide on me", None).unwrap()).await.unwrap();
    let sha = info.sha256.to_string();
    println!("\n## Guest overhead: one policy decision, µs\n");
    println!("| decision | instance | median | p99 | calls |");
    println!("|---|---|---:|---:|---:|");
    for (decision, put) in [("put: placement (namespaces)", true), ("get: authorize", false)] {
        for (label, reuse) in [("warm (reused)", true), ("fresh per call (what Coffer does)", false)] {
            let times = coffer.time_policy_decisions("acme", &sha, plan.decisions, reuse, put).await.unwrap();
            let mut us: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
            println!(
                "| {decision} | {label} | {:.2} | {:.2} | {} |",
                median(&mut us),
                percentile(&mut us, 0.99),
                us.len()
            );
        }
    }

    // What the default fuel budget means in time: an endless loop, stopped.
    let mut config = Config {
        database_url: Some(format!("sqlite:{}", dir.join("loop.db").display())),
        cache_dir: Some(dir.join("cache")),
        ..Config::default()
    };
    config.policy = Some(Path::new(coffer::policy::TEST_GUESTS_DIR).join("coffer_test_guest_hostile.wasm"));
    let hostile = Coffer::open(config).await.unwrap();
    let mut ms = Vec::new();
    for _ in 0..if plan.quick { 1 } else { 5 } {
        let t = Instant::now();
        let err = hostile.put("loop", Content::from_bytes("x", None).unwrap()).await.unwrap_err();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(err.to_string().contains("CPU budget"));
    }
    println!(
        "\nAn endless loop is stopped by the default fuel budget ({} instructions) after {:.0} ms (median).",
        coffer::config::PolicyLimits::default().fuel,
        median(&mut ms)
    );
}
