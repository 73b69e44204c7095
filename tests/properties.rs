//! Property tests on the pure core: the reader and validator never panic, whatever
//! the bytes, and every diagnostic points inside the file.

use pbxsync::validate::{Policy, validate};
use proptest::prelude::*;

fn csvish() -> impl Strategy<Value = Vec<u8>> {
    let atoms = prop::sample::select(vec![
        &b","[..],
        b";",
        b"\"",
        b"\n",
        b"\r\n",
        b" ",
        b"1001",
        b"Jason",
        b"jflynn",
        b"Sec_ret12",
        b"0004F2123456",
        b"virtual",
        b"\xEB",
        b"\xEF\xBB\xBF",
        b"\x00",
        b"'",
        b"Extension",
        b"Device MAC Address",
    ]);
    prop::collection::vec(atoms, 0..200).prop_map(|parts| parts.concat())
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let v = validate(bytes, &Policy::default());
    let lines = u32::try_from(bytes.iter().filter(|&&b| b == b'\n').count() + 1).unwrap();
    for d in &v.diagnostics {
        if let Some(line) = d.line {
            prop_assert!(
                line >= 1 && line <= lines,
                "line {line} outside 1..={lines}: {d:?}"
            );
        }
        if let Some(span) = &d.span {
            prop_assert!(span.start <= span.end && span.end <= v.text.len());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check(&bytes)?;
    }

    #[test]
    fn csv_like_bytes_never_panic(bytes in csvish()) {
        check(&bytes)?;
    }
}
