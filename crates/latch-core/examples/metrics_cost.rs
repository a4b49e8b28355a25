//! What the metrics cost one grant, in CPU: the records an activated grant emits (as the grant
//! function builds them: the grant, its start-to-active time, and each of its four AWS calls'
//! latency and retries), rendered to EMF lines as `metrics::emit` renders them, into memory
//! instead of stdout (the write itself is the runtime's log pipe, the same for any log line).
//! Run by bench/run in the release profile; prints one line of figures.
//!
//! `cargo run --release -q -p latch-core --example metrics_cost [GRANTS]`

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use chrono::{Duration, Utc};
use latch_core::metrics::{MetricRecord, emf_documents};

/// A grant's calls, as the SDK interceptor names them: two transactions, the policy, the event.
const GRANT_CALLS: [&str; 4] = [
    "DynamoDB.TransactWriteItems",
    "IAM.PutRolePolicy",
    "DynamoDB.TransactWriteItems",
    "EventBridge.PutEvents",
];

fn grant_records(i: u32) -> Vec<MetricRecord> {
    let now = Utc::now();
    let mut records = MetricRecord::grant_activated(now - Duration::milliseconds(i64::from(i % 900)), now);
    for (n, op) in GRANT_CALLS.iter().enumerate() {
        records.extend(MetricRecord::aws_call(op, 20.0 + f64::from((i + n as u32) % 50), 1));
    }
    records
}

fn main() {
    let grants: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let (mut bytes, mut lines) = (0usize, 0usize);
    // Warm the allocator and caches with one untimed round.
    for doc in emf_documents(&grant_records(0), "grant", Utc::now()) {
        let _ = writeln!(out, "{doc}");
    }
    out.clear();
    let started = Instant::now();
    for i in 0..grants {
        let records = grant_records(i);
        for doc in emf_documents(&records, "grant", Utc::now()) {
            let _ = writeln!(out, "{doc}");
            lines += 1;
        }
        bytes += out.len();
        black_box(&out);
        out.clear();
    }
    let per_grant_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(grants);
    println!(
        "metrics per grant: {per_grant_us:.1} µs CPU to build and render, {:.1} EMF lines, {:.0} bytes of log \
         ({grants} grants)",
        lines as f64 / f64::from(grants),
        bytes as f64 / f64::from(grants),
    );
}
