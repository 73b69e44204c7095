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
    // LF, CRLF and a lone CR each end a line.
    let breaks = (0..bytes.len())
        .filter(|&i| bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    let lines = u32::try_from(breaks + 1).unwrap();
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

mod diff {
    //! Property tests on the pure diff (SPEC: diff(d, d) is empty; applying diff(d, c)
    //! to c gives d; the order of the rows does not change the plan).

    use pbxsync::model::{
        ColumnSet, Desired, DesiredExtension, DesiredUser, Device, DeviceCell, Directory,
        Extension, ExtensionKind, Licenses, Secret, Text, User,
    };
    use pbxsync::plan::{DiffOptions, diff, simulate};
    use pbxsync::validate::{Policy, validate};
    use proptest::prelude::*;

    const USERS: usize = 6;
    const EXTS: usize = 16;
    const DEVICES: usize = 12;

    fn username(i: usize) -> Text {
        format!("user{}", i % USERS).into()
    }
    fn number(i: usize) -> Text {
        format!("{}", 1000 + i).into()
    }
    fn device(i: usize) -> Text {
        format!("0004F2{i:06X}").into()
    }
    fn first(i: usize) -> Text {
        ["Jason", "Maria", "Wei"][i % 3].into()
    }

    /// (extension index, device index or none = virtual, description index)
    type Row = (usize, Option<usize>, usize);

    fn rows() -> impl Strategy<Value = Vec<Row>> {
        (
            prop::sample::subsequence((0..EXTS).collect::<Vec<_>>(), 1..EXTS),
            Just((0..DEVICES).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec((any::<bool>(), 0..3usize), EXTS),
        )
            .prop_map(|(exts, devs, opts)| {
                exts.into_iter()
                    .enumerate()
                    .map(|(k, e)| {
                        (
                            e,
                            opts[k].0.then(|| devs.get(k).copied()).flatten(),
                            opts[k].1,
                        )
                    })
                    .collect()
            })
    }

    fn desired(rows: &[Row], names: usize) -> Desired {
        let mut users: Vec<DesiredUser> = Vec::new();
        for &(e, _, _) in rows {
            let u = username(e);
            if !users.iter().any(|x| x.username == u) {
                users.push(DesiredUser {
                    username: u.clone(),
                    fields: [
                        first(e % USERS + names),
                        "Flynn".into(),
                        "".into(),
                        "".into(),
                        "".into(),
                    ],
                    password: Some(Secret::new("Sec_ret12")),
                    line: 1,
                });
            }
        }
        users.sort_by(|a, b| a.username.cmp(&b.username));
        let mut extensions: Vec<DesiredExtension> = rows
            .iter()
            .map(|&(e, d, desc)| DesiredExtension {
                number: number(e),
                username: username(e),
                description: format!("desk {desc}").into(),
                device: d.map_or(DeviceCell::Virtual, |d| DeviceCell::Device(device(d))),
                line: 1,
            })
            .collect();
        extensions.sort_by(|a, b| pbxsync::model::cmp_extension(&a.number, &b.number));
        Desired {
            managed: ColumnSet::ALL,
            users,
            extensions,
        }
    }

    fn directory_of(d: &Desired) -> Directory {
        let mut dir = Directory {
            users: d
                .users
                .iter()
                .map(|u| User {
                    username: u.username.clone(),
                    fields: u.fields.clone(),
                })
                .collect(),
            extensions: d
                .extensions
                .iter()
                .map(|e| Extension {
                    number: e.number.clone(),
                    username: e.username.clone(),
                    kind: match e.device {
                        DeviceCell::Device(_) => ExtensionKind::Device,
                        DeviceCell::Virtual => ExtensionKind::Virtual,
                        DeviceCell::Keep => ExtensionKind::VoicemailOnly,
                    },
                    device: match &e.device {
                        DeviceCell::Device(id) => Some(id.clone()),
                        _ => None,
                    },
                    description: e.description.clone(),
                })
                .collect(),
            devices: (0..DEVICES)
                .map(|i| Device {
                    id: device(i),
                    model: "".into(),
                })
                .collect(),
            licenses: Licenses::default(),
        };
        dir.sort();
        dir
    }

    fn csv(rows: &[Row]) -> String {
        rows.iter()
            .map(|&(e, d, desc)| {
                format!(
                    "{},{},Flynn,{},Sec_ret12,desk {desc},,,,{}\n",
                    number(e),
                    first(e % USERS),
                    username(e),
                    d.map_or("virtual".to_string(), |d| device(d).to_string())
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn diff_of_a_state_with_itself_is_empty(rows in rows()) {
            let d = desired(&rows, 0);
            let plan = diff(&d, &directory_of(&d), &DiffOptions { prune: true, ..DiffOptions::default() });
            prop_assert!(plan.actions.is_empty(), "{:?}", plan.actions);
            prop_assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        }

        #[test]
        fn applying_the_diff_gives_the_desired_state(want in rows(), have in rows(), names in 0..2usize) {
            let d = desired(&want, 0);
            let c = directory_of(&desired(&have, names));
            let plan = diff(&d, &c, &DiffOptions { prune: true, ..DiffOptions::default() });
            prop_assert!(plan.errors.is_empty(), "{:?}", plan.errors);
            let after = simulate::apply(&c, &plan.actions);
            let expected = directory_of(&d);
            prop_assert_eq!(&after.users, &expected.users);
            prop_assert_eq!(&after.extensions, &expected.extensions);
            // And once applied, there is nothing left to do.
            let again = diff(&d, &after, &DiffOptions { prune: true, ..DiffOptions::default() });
            prop_assert!(again.actions.is_empty(), "{:?}", again.actions);
        }

        #[test]
        fn row_order_does_not_change_the_plan(rows in rows().prop_shuffle(), have in rows()) {
            let mut sorted = rows.clone();
            sorted.sort();
            let (a, b) = (csv(&rows), csv(&sorted));
            let (va, vb) = (validate(a.as_bytes(), &Policy::default()), validate(b.as_bytes(), &Policy::default()));
            prop_assert!(!va.has_errors(), "{:?}", va.diagnostics);
            let c = directory_of(&desired(&have, 1));
            let opts = DiffOptions { prune: true, ..DiffOptions::default() };
            let (pa, pb) = (diff(&va.desired, &c, &opts), diff(&vb.desired, &c, &opts));
            // Lines differ between the two files; the actions must not.
            let strip = |p: &pbxsync::plan::Plan| p.actions.iter().map(|a| a.action.clone()).collect::<Vec<_>>();
            prop_assert_eq!(strip(&pa), strip(&pb));
        }
    }
}
