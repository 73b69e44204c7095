//! Provisioning files at scale: N Yealink phones into an empty folder, then the
//! same with one phone changed (which must write exactly one file).
//!
//! `cargo run --release --example provision_bench -- 100000 /tmp/prov-bench`

use pbxsync::model::{Phone, Secret, Text};
use pbxsync::publish::provision::{Settings, provision};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/prov-bench".into()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clearing the folder");
    }
    let settings = Settings {
        dir: dir.clone(),
        server: "pbx.example.com:5060".into(),
        templates: Default::default(),
    };
    let mut phones: Vec<Phone> = (0..n)
        .map(|i| Phone {
            extension: Text::from(format!("{}", 100_000 + i)),
            display_name: Text::from(format!("User Number{i}")),
            device: Text::from(format!("0015{:08X}", i)),
            model: Text::from("Yealink T46U"),
            sip_secret: Secret::new(&format!("secret-{i:08x}")),
        })
        .collect();

    let t = Instant::now();
    let full = provision(&settings, &phones).expect("first run");
    let first = t.elapsed();
    println!(
        "full run:     {:>8.3} s  written {} unchanged {} removed {} warnings {}",
        first.as_secs_f64(),
        full.written.len(),
        full.unchanged,
        full.removed.len(),
        full.warnings.len()
    );

    phones[n / 2].display_name = Text::from("Changed Name");
    let t = Instant::now();
    let one = provision(&settings, &phones).expect("second run");
    let second = t.elapsed();
    println!(
        "one changed:  {:>8.3} s  written {} unchanged {} removed {} warnings {}",
        second.as_secs_f64(),
        one.written.len(),
        one.unchanged,
        one.removed.len(),
        one.warnings.len()
    );

    let t = Instant::now();
    let idle = provision(&settings, &phones).expect("third run");
    println!(
        "nothing new:  {:>8.3} s  written {} unchanged {}",
        t.elapsed().as_secs_f64(),
        idle.written.len(),
        idle.unchanged
    );
    assert_eq!(full.written.len(), n);
    assert_eq!(one.written.len(), 1);
    assert!(idle.written.is_empty());
}
