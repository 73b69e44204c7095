//! Benchmarks of the pipeline on `shared/bench/gen.py`-shaped data at 10k, 100k and
//! 1M rows: cost must grow linearly. Run: `cargo bench --bench pipeline`.

mod data;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pbxsync::validate::{self, Policy};
use std::hint::black_box;

fn sizes() -> Vec<usize> {
    match std::env::var("PBXSYNC_BENCH_ROWS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![10_000, 100_000, 1_000_000],
    }
}

fn validate(c: &mut Criterion) {
    // `PBXSYNC_BENCH_DUMP=FILE` writes 1,000 generated rows, to compare with gen.py.
    if let Ok(path) = std::env::var("PBXSYNC_BENCH_DUMP") {
        std::fs::write(path, data::users(1000, false)).expect("write the dump");
    }
    let mut group = c.benchmark_group("validate");
    group.sample_size(10);
    for n in sizes() {
        let csv = data::users(n, false);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("check", n), &csv, |b, csv| {
            b.iter(|| {
                black_box(validate::check(csv.as_bytes(), &Policy::default()))
                    .diagnostics
                    .len()
            })
        });
        group.bench_with_input(BenchmarkId::new("csv_crate_floor", n), &csv, |b, csv| {
            b.iter(|| {
                let mut r = csv::ReaderBuilder::new().from_reader(csv.as_bytes());
                let mut rec = csv::ByteRecord::new();
                let mut rows = 0;
                while r.read_byte_record(&mut rec).unwrap_or(false) {
                    rows += 1;
                }
                rows
            })
        });
    }
    group.finish();
}

criterion_group!(benches, validate);
criterion_main!(benches);
