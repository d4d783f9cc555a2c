//! Criterion benchmarks of every reference workload in the README's speed
//! table (the same closures `anneal bench` times).
//!
//! Run with `RAYON_NUM_THREADS=1 cargo bench -p anneal-zoo --bench workloads`
//! (or 2); filter by name, e.g. `-- "CNN"`.

use anneal_zoo::bench::workloads;
use criterion::{criterion_group, criterion_main, Criterion};

fn reference_workloads(c: &mut Criterion) {
    let mut g = c.benchmark_group("workloads");
    g.sample_size(20);
    for (name, mut call, _throughput) in workloads().expect("building the workloads") {
        g.bench_function(name, |b| b.iter(|| call().expect("workload call")));
    }
    g.finish();
}

criterion_group!(benches, reference_workloads);
criterion_main!(benches);
