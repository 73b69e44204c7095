//! The floor that `shared/bench/README.md` gives for orientation, measured on the
//! reference machine: the `csv` crate reading every record of a file (0.24 s for
//! the 1M-row file there). `benches/compare.sh` times it in the same run as
//! pbxsync and the baseline, as a measure of how fast this machine runs Rust.
//!
//!     cargo run --release --example csv_floor -- users.csv

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: csv_floor FILE.csv")?;
    let start = Instant::now();
    let mut reader = csv::ReaderBuilder::new().from_path(&path)?;
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    while reader.read_byte_record(&mut record)? {
        rows += 1;
    }
    println!("{rows} {:.3}", start.elapsed().as_secs_f64());
    Ok(())
}
