//! Small objects on SQLite, and the catalog on PostgreSQL against
//! SQLite, one host against two.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use coffer::{Coffer, Config, Content};
use futures_util::StreamExt;

use crate::Plan;
use crate::support::{median, payload, s3_config, spread};

/// 4 KiB objects on SQLite, with the catalog's commits synced fully (what
/// Coffer runs with) and, for comparison, `synchronous = NORMAL` (what it
/// ran with before: faster, but an acknowledged put can vanish on power
/// loss). Rounds alternate so both see the same machine.
pub(crate) async fn sqlite(plan: &Plan, dir: &Path) {
    use coffer::backend::Backends;
    use coffer::db::sqlite::{SqliteDb, SqliteOptions, Synchronous};
    let rounds = if plan.quick { 1 } else { 3 };
    let mut results: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![("FULL", vec![], vec![]), ("NORMAL", vec![], vec![])];
    for round in 0..rounds {
        for (i, sync) in [Synchronous::Full, Synchronous::Normal].into_iter().enumerate() {
            let path = dir.join(format!("small-{round}-{i}.db"));
            let config = Config {
                database_url: Some(format!("sqlite:{}", path.display())),
                cache_dir: Some(dir.join("cache")),
                ..Config::default()
            };
            let db = SqliteDb::open_with(&path, SqliteOptions { synchronous: sync, ..SqliteOptions::default() })
                .await
                .unwrap();
            let backends = Backends { database: Arc::new(db.clone()), s3: None };
            let coffer = Coffer::from_parts(config, Arc::new(db), backends).await.unwrap();
            let tag = 5_000_000 + (round * 2 + i) as u64 * 100_000;
            let bodies: Vec<Vec<u8>> = (0..plan.sqlite_objects).map(|n| payload(4 << 10, tag + n as u64)).collect();
            let t = Instant::now();
            let mut shas = Vec::new();
            for b in &bodies {
                shas.push(coffer.put("acme", Content::from_bytes(b.clone(), None).unwrap()).await.unwrap().sha256);
            }
            results[i].1.push(plan.sqlite_objects as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            for s in &shas {
                coffer.get_bytes("acme", s).await.unwrap();
            }
            results[i].2.push(plan.sqlite_objects as f64 / t.elapsed().as_secs_f64());
        }
    }
    println!("\n## Database fallback: 4 KiB objects on SQLite (medians over {rounds} rounds)\n");
    println!("| synchronous | objects | puts/s | gets/s |\n|---|---:|---:|---:|");
    let mut medians = Vec::new();
    for (name, puts, gets) in &mut results {
        let (p, g) = (median(puts), median(gets));
        medians.push(p);
        println!("| {name} | {} | {p:.0} ({}) | {g:.0} ({}) |", plan.sqlite_objects, spread(puts), spread(gets));
    }
    println!("\nFULL/NORMAL puts: {:.2}", medians[0] / medians[1]);
}

/// Put then get `objects` 4 KiB objects for "acme", spread round-robin
/// over `hosts`, `concurrency` at a time; puts/s and gets/s.
pub(crate) async fn small_load(hosts: &[Coffer], objects: usize, concurrency: usize, tag: u64) -> (f64, f64) {
    let bodies: Vec<(usize, Vec<u8>)> = (0..objects).map(|n| (n, payload(4 << 10, tag + n as u64))).collect();
    let t = Instant::now();
    let shas: Vec<_> = futures_util::stream::iter(bodies)
        .map(|(n, b)| {
            let host = hosts[n % hosts.len()].clone();
            async move { (n, host.put("acme", Content::from_bytes(b, None).unwrap()).await.unwrap().sha256) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let puts = objects as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    futures_util::stream::iter(shas)
        .map(|(n, sha)| {
            let host = hosts[n % hosts.len()].clone();
            async move { host.get_bytes("acme", &sha).await.unwrap() }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    (puts, objects as f64 / t.elapsed().as_secs_f64())
}

/// 4 KiB objects with the catalog (and the fallback's blobs) on SQLite
/// and on PostgreSQL, both syncing their commits (SQLite FULL, PostgreSQL
/// fsync on), on the database fallback and on S3; one host, and two hosts
/// (two Coffers with a pool each) sharing the same number of operations in
/// flight. Every host, PostgreSQL and the S3 server share this machine's
/// cores.
pub(crate) async fn catalogs(plan: &Plan, dir: &Path, endpoint: &str) {
    let server = tokio::task::spawn_blocking(|| crate::pg_server::start(true)).await.unwrap();
    let rounds = if plan.quick { 1 } else { 3 };
    let objects = if plan.quick { 20 } else { 400 };
    // (catalog, blobs, hosts, concurrency)
    let cases: &[(&str, &str, usize, usize)] = &[
        ("SQLite", "database", 1, 1),
        ("PostgreSQL", "database", 1, 1),
        ("SQLite", "S3", 1, 1),
        ("PostgreSQL", "S3", 1, 1),
        ("SQLite", "database", 1, 8),
        ("PostgreSQL", "database", 1, 8),
        ("PostgreSQL", "database", 2, 8),
        ("SQLite", "S3", 1, 8),
        ("PostgreSQL", "S3", 1, 8),
        ("PostgreSQL", "S3", 2, 8),
    ];
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); cases.len()];
    for round in 0..rounds {
        for (i, (catalog, blobs, hosts, concurrency)) in cases.iter().enumerate() {
            let case_dir = dir.join(format!("catalogs-{round}-{i}"));
            std::fs::create_dir_all(&case_dir).unwrap();
            let mut config = match *blobs {
                "S3" => s3_config(&case_dir, endpoint, &format!("catalogs-{round}-{i}")),
                _ => Config { cache_dir: Some(dir.join("cache")), ..Config::default() },
            };
            config.cache_dir = Some(dir.join("cache"));
            config.database_url = Some(match *catalog {
                "PostgreSQL" => crate::pg_server::fresh_database_on(&server, &format!("bench_{round}_{i}")).await,
                _ => format!("sqlite:{}", case_dir.join("c.db").display()),
            });
            let mut opened = Vec::new();
            for _ in 0..*hosts {
                opened.push(Coffer::open(config.clone()).await.unwrap());
            }
            let tag = 9_000_000 + (round * cases.len() + i) as u64 * 100_000;
            let (p, g) = small_load(&opened, objects, *concurrency, tag).await;
            results[i].0.push(p);
            results[i].1.push(g);
        }
    }
    println!("\n## 4 KiB objects: the catalog on SQLite and on PostgreSQL (medians over {rounds} rounds)\n");
    println!("| catalog | blobs | hosts | in flight | objects | puts/s | gets/s |\n|---|---|---:|---:|---:|---:|---:|");
    for ((catalog, blobs, hosts, concurrency), (puts, gets)) in cases.iter().zip(&mut results) {
        let (p, g) = (median(puts), median(gets));
        println!(
            "| {catalog} | {blobs} | {hosts} | {concurrency} | {objects} | {p:.0} ({}) | {g:.0} ({}) |",
            spread(puts),
            spread(gets)
        );
    }
}
