//! The rows of `shared/bench/gen.py`, generated in Rust so that `cargo bench` needs
//! no Python: same names, passwords, MACs and the same 0.8% of rows that break a
//! rule on purpose (`clean: false`).

const FIRST: [&str; 20] = [
    "Jason", "Maria", "Wei", "Aisha", "Lars", "Priya", "Tom", "Elena", "Kofi", "Sofia", "Hiro",
    "Olga", "Diego", "Fatima", "Sean", "Mei", "Ivan", "Nora", "Omar", "Zoe",
];
const LAST: [&str; 20] = [
    "Flynn", "Garcia", "Chen", "Khan", "Berg", "Patel", "Smith", "Rossi", "Mensah", "Silva",
    "Tanaka", "Ivanova", "Lopez", "Haddad", "Murphy", "Wong", "Petrov", "Nilsen", "Farah", "Klein",
];
const DESC: [&str; 5] = [
    "Sales desk",
    "Support",
    "Front desk",
    "Warehouse",
    "Conference room, 2nd floor",
];
const PWSUF: [&str; 4] = ["ab", "xyz", "q", "mnop"];
pub const HEADER: &str = "Extension,First Name,Last Name,Web Username,Password,Description,Email,IM,Mobile,Device MAC Address\n";

fn row(i: usize, clean: bool, out: &mut String) {
    use std::fmt::Write;
    let mut first = FIRST[i % 20].to_string();
    let mut last = LAST[(i / 20) % 20].to_string();
    let web = format!("{}{}{i}", first[..1].to_lowercase(), last.to_lowercase());
    let mut pw = format!("Secret_{:02}{}", i % 100, PWSUF[i % 4]);
    let mut mac = format!("0004F2{i:06X}");
    match if clean { usize::MAX } else { i % 500 } {
        7 => mac = mac.to_lowercase(),
        13 => last = "O'Brien".into(),
        21 => pw = "short1".into(),
        33 => first.push(' '),
        _ => {}
    }
    let desc = DESC[i % 5];
    let desc = if desc.contains(',') {
        format!("\"{desc}\"")
    } else {
        desc.to_string()
    };
    let _ = writeln!(
        out,
        "{},{first},{last},{web},{pw},{desc},{web}@example.com,{web},+1555{i:07},{mac}",
        1_000_000 + i
    );
}

/// `gen.py N users.csv [--clean]`.
pub fn users(n: usize, clean: bool) -> String {
    let mut out = String::with_capacity(n * 125);
    out.push_str(HEADER);
    for i in 0..n {
        row(i, clean, &mut out);
    }
    out
}
