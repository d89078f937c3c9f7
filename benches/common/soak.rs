//! The soak of benches/kafka.rs (`WEIR_BENCH_SOAK_SECS=600 cargo bench --bench kafka`):
//! `weir run` (a child process, so its RSS is weir's alone) with the 1-stage passthrough,
//! first on a backlog to find its maximum rate, then offered 80 % of that for the given
//! time while its RSS is sampled every 10 s. Prints the samples, min/max and whether the
//! RSS stayed flat within 10 % (max ≤ 1.1 × min over every sample).
//! `WEIR_BENCH_SOAK_RATE` skips the maximum-rate run and offers that rate instead.

use crate::weir_process::{load_average, WeirProcess};
use crate::{append_span, create_topics, end_offsets, feed, passthrough_yaml, wait_for};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::transport::Transport;

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const BACKLOG: u64 = 500_000;

fn start_weir(dir: &std::path::Path, input: &str, output: &str) -> WeirProcess {
    let file = dir.join(format!("{input}.yaml"));
    std::fs::write(&file, passthrough_yaml(input, output)).expect("write topology");
    let data = dir.join(format!("{input}-data"));
    let data = data.to_str().expect("utf-8 path");
    WeirProcess::start("soak", &file, &["--data-dir", data], &[], false)
}

pub async fn run(t: &Arc<dyn Transport>, duration: Duration) {
    let dir = tempfile::tempdir().expect("tmp");
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let name = |s: &str| format!("bench-soak-{run}-{s}");
    // Two minutes of retention: a 10-minute soak at tens of thousands of records/s would
    // otherwise keep gigabytes on the broker's disk.
    let keep = 120_000;
    create_topics(&[name("max-in"), name("in")], false, keep).await;
    create_topics(&[name("max-out"), name("out")], true, keep).await;
    println!("load average before: {}", load_average());

    let max_rate = match std::env::var("WEIR_BENCH_SOAK_RATE").ok().and_then(|v| v.parse::<f64>().ok()) {
        Some(r) => r / 0.8,
        None => {
            println!("maximum rate of `weir run` (1 passthrough stage) on a backlog of {BACKLOG}…");
            feed(t, &name("max-in"), BACKLOG, None, false).await;
            let mut w = start_weir(dir.path(), &name("max-in"), &name("max-out"));
            wait_for(t, &name("max-out"), BACKLOG as i64).await;
            w.stop(Duration::from_secs(30));
            let (first, last) = append_span(t, &name("max-out")).await;
            let r = BACKLOG as f64 / ((last - first).max(1) as f64 / 1000.0);
            println!("  {r:.0} records/s");
            r
        }
    };
    let rate = max_rate * 0.8;
    let total = (rate * duration.as_secs_f64()) as u64;
    println!("soak: {rate:.0} records/s offered (80 %) for {} s = {total} records; RSS every {} s", duration.as_secs(), SAMPLE_EVERY.as_secs());

    let mut w = start_weir(dir.path(), &name("in"), &name("out"));
    let feeder = {
        let (t, topic) = (t.clone(), name("in"));
        tokio::spawn(async move { feed(&t, &topic, total, Some(rate), false).await })
    };
    let started = Instant::now();
    let mut samples: Vec<(u64, u64, i64)> = Vec::new();
    let mut next = SAMPLE_EVERY;
    while !feeder.is_finished() {
        tokio::time::sleep(next.saturating_sub(started.elapsed())).await;
        let Some(rss) = w.rss_kib() else {
            panic!("weir exited during the soak:\n{}", w.log_text());
        };
        let out = end_offsets(t, &name("out")).await;
        let fed = end_offsets(t, &name("in")).await;
        // The feeder can fall behind its schedule on a busy machine: both are shown, so
        // weir's own lag (fed − outputs) is told apart from the feeder's.
        let offered = ((rate * started.elapsed().as_secs_f64()) as i64).min(total as i64);
        println!(
            "  t={:>4} s  RSS {:>7.1} MiB  fed {fed:>9} (schedule {offered:>9})  outputs {out:>9}  lag {:>8}  load {}",
            started.elapsed().as_secs(),
            rss as f64 / 1024.0,
            (fed - out).max(0),
            load_average()
        );
        samples.push((started.elapsed().as_secs(), rss, out));
        next += SAMPLE_EVERY;
    }
    feeder.await.expect("feeder");
    let caught_up = tokio::time::timeout(Duration::from_secs(120), wait_for(t, &name("out"), total as i64)).await.is_ok();
    let out = end_offsets(t, &name("out")).await;
    w.stop(Duration::from_secs(30));

    let rss: Vec<u64> = samples.iter().map(|s| s.1).collect();
    let (min, max) = (rss.iter().copied().min().unwrap_or(0), rss.iter().copied().max().unwrap_or(0));
    let flat = min > 0 && max as f64 <= min as f64 * 1.10;
    println!(
        "soak result: {} samples, RSS min {:.1} MiB, max {:.1} MiB (max/min {:.3}): {}; outputs {out} of {total}{}",
        rss.len(),
        min as f64 / 1024.0,
        max as f64 / 1024.0,
        max as f64 / min.max(1) as f64,
        if flat { "flat within 10 %" } else { "NOT flat within 10 %" },
        if caught_up { "" } else { " (did not catch up within 120 s of the last offer)" }
    );
    if rss.len() > 6 {
        let after: Vec<u64> = rss[6..].to_vec();
        let (a_min, a_max) = (after.iter().copied().min().unwrap_or(0), after.iter().copied().max().unwrap_or(0));
        println!(
            "  after the first minute: min {:.1} MiB, max {:.1} MiB (max/min {:.3})",
            a_min as f64 / 1024.0,
            a_max as f64 / 1024.0,
            a_max as f64 / a_min.max(1) as f64
        );
    }
}
