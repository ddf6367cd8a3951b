use super::*;
use crate::{
    event::{Call, Child, Exec, Exit, Fork, NsSet, Transition},
    output::Sink as _,
};

fn set(base: u32) -> NsSet {
    NsSet {
        inum: std::array::from_fn(|i| base + i as u32),
        id: std::array::from_fn(|i| u64::from(base) * 10 + i as u64),
    }
}

/// One record of each kind, with every optional part present somewhere. Fields of the same
/// type hold different values, so that the golden file notices two of them trading places.
fn records() -> Vec<Record> {
    let setns = Transition {
        ts_ns: 5_000,
        call: Call::Setns,
        flags: 0x0400_0000,
        ret: 0,
        fd: Some(7),
        tid: 43,
        pid: 42,
        ppid: 41,
        uid: 1000,
        ns_tid: 3,
        pid_level: 2,
        start_boottime_ns: 900,
        comm: Comm::from("nsenter"),
        before: set(4026531830),
        after: set(4026532100),
        child: None,
        before_inferred: true,
    };
    let clone = Transition {
        ts_ns: 6_000,
        call: Call::Clone3,
        flags: 0x7c02_0000,
        ret: -22,
        fd: None,
        comm: Comm::from("crun ünï"),
        child: Some(Box::new(Child {
            tid: 77,
            start_ns: 5_999,
            ns_tid: 1,
            ns: set(4026532200),
        })),
        ..setns.clone()
    };
    vec![
        Record::Fork(Fork {
            ts_ns: 1_000,
            tid: 44,
            pid: 42,
            start_ns: 900,
            parent_tid: 41,
            parent_pid: 40,
            parent_start_ns: 100,
            comm: Comm::from("sh"),
        }),
        Record::Exec(Box::new(Exec {
            ts_ns: 2_000,
            tid: 46,
            pid: 42,
            old_tid: 43,
            start_ns: 900,
            comm: Comm::from("nsenter"),
            filename: "/usr/bin/nsenter".into(),
        })),
        Record::Transition(Box::new(setns)),
        Record::Transition(Box::new(clone)),
        Record::Exit(Exit {
            ts_ns: 9_000,
            tid: 47,
            pid: 42,
            start_ns: 900,
            code: 256,
            group_dead: true,
            comm: Comm::from("nsenter"),
        }),
    ]
}

/// A binary record file of a header, a process line and `records()`, as bytes.
fn binary_file() -> Vec<u8> {
    // One file per call: the tests run on parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("nstrace-bin-{}-{call}", std::process::id()));
    let mut sink = BinSink::new(RecordFile::create(&path).unwrap()).unwrap();
    let header = Header::new("6.18".into(), 0, 0, BTreeMap::new(), false, vec![], false);
    sink.note(&serde_json::to_value(&header).unwrap()).unwrap();
    let process = ProcEntry {
        tid: 42,
        pid: 42,
        ppid: 1,
        comm: Comm::from("sh"),
        start_ns: 900,
        inodes: [Some(4026531840); nstrace_common::NS_SLOTS],
    };
    sink.note(&serde_json::to_value(ProcessLine::from(&process)).unwrap())
        .unwrap();
    for r in records() {
        sink.record(&r).unwrap();
    }
    sink.flush().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    bytes
}

fn read_all(bytes: &[u8]) -> Vec<(usize, Result<Entry, String>)> {
    let mut out = Vec::new();
    read_entries(
        Box::new(std::io::Cursor::new(bytes.to_vec())),
        &mut |n, e| {
            out.push((n, e));
            true
        },
    )
    .unwrap();
    out
}

fn records_of(entries: &[(usize, Result<Entry, String>)]) -> Vec<Record> {
    entries
        .iter()
        .filter_map(|(_, e)| match e {
            Ok(Entry::Record(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_binary_file_reads_back_every_entry_exactly() {
    let bytes = binary_file();
    assert!(bytes.starts_with(&BIN_MAGIC));
    let entries = read_all(&bytes);
    assert!(matches!(entries[0], (1, Ok(Entry::Header(ref h))) if h.kernel == "6.18"));
    assert!(matches!(entries[1], (2, Ok(Entry::Process(ref p))) if p.pid == 42));
    assert_eq!(records_of(&entries), records());
    assert_eq!(entries.len(), 2 + records().len());
}

/// Files recorded by earlier builds must read the same: the encoding follows the records'
/// field order, so a change to a record type shows here. After a deliberate change, bump
/// [`BIN_MAGIC`]'s version byte and regenerate with NSTRACE_BLESS=1.
#[test]
fn the_binary_encoding_matches_the_golden_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/testdata/record.golden.bin"
    );
    let got = binary_file();
    if std::env::var_os("NSTRACE_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read(path).expect("the golden file");
    assert!(
        got == want,
        "the binary record encoding changed. A record type's fields or their order: bump \
         BIN_MAGIC's version byte so that older files are refused by name. Only a JSON \
         line (header, process) that older files still read: no bump. Then \
         NSTRACE_BLESS=1 to accept"
    );
    assert_eq!(records_of(&read_all(&want)), records());
}

#[test]
fn a_binary_file_of_another_version_is_refused_by_name() {
    let mut bytes = binary_file();
    let at = BIN_MAGIC.len() - 1;
    bytes[at] = 1;
    let path = std::env::temp_dir().join(format!("nstrace-v1-{}", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let result = Source::open(&path);
    let _ = std::fs::remove_file(&path);
    let Err(err) = result else {
        panic!("a version-1 file was read");
    };
    assert!(matches!(err, ReplayError::BinaryVersion { found: 1, .. }));
    let err = err.to_string();
    assert!(
        err.contains("binary nstrace record of version 1")
            && err.contains(&format!("reads version {}", BIN_MAGIC[at])),
        "{err}"
    );
}

#[test]
fn a_binary_file_cut_anywhere_keeps_every_whole_frame_before_the_cut() {
    let bytes = binary_file();
    let whole = read_all(&bytes).len();
    for cut in BIN_MAGIC.len()..bytes.len() {
        let entries = read_all(&bytes[..cut]);
        let good = entries.iter().filter(|(_, e)| e.is_ok()).count();
        let bad: Vec<_> = entries
            .iter()
            .filter_map(|(_, e)| e.as_ref().err())
            .collect();
        assert!(bad.len() <= 1, "cut at {cut}: {bad:?}");
        assert!(bad.iter().all(|e| e.starts_with("truncated")), "{bad:?}");
        assert!(good < whole, "cut at {cut}");
        // Every frame that ends before the cut is read.
        let expected = records();
        let got = records_of(&entries);
        assert_eq!(got[..], expected[..got.len()], "cut at {cut}");
    }
}

#[test]
fn a_damaged_frame_is_reported_and_the_frames_after_it_are_read() {
    let mut bytes = binary_file();
    // The fifth frame (the setns): keep its length, scramble its entry.
    let mut at = BIN_MAGIC.len();
    for _ in 0..4 {
        at += 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    }
    bytes[at + 4] = 0xee;
    let entries = read_all(&bytes);
    assert_eq!(entries.len(), 2 + records().len());
    assert!(
        matches!(&entries[4], (5, Err(e)) if e.contains("undecodable")),
        "{:?}",
        entries[4].1.as_ref().err()
    );
    let mut expected = records();
    expected.remove(2);
    assert_eq!(records_of(&entries), expected);
}

#[test]
fn an_impossible_frame_length_stops_the_reading_with_a_reason() {
    let mut bytes = binary_file();
    let first = BIN_MAGIC.len() + 4 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    bytes[first..first + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let entries = read_all(&bytes);
    assert_eq!(entries.len(), 2);
    assert!(
        matches!(&entries[1], (2, Err(e)) if e.contains("corrupt from here on")),
        "{:?}",
        entries[1].1.as_ref().err()
    );
}

/// The JSON Lines record of `records()` (and a loss), as `--json` and `-o` write it: pinned,
/// and read back whole. Regenerate with NSTRACE_BLESS=1 after a deliberate change.
#[test]
fn json_lines_match_the_golden_file_and_read_back() {
    use crate::output::{Sink as _, json::JsonSink};
    let loss = Loss {
        ts_ns: 9_500,
        noticed_ns: 9_900,
        cpu: 1,
        records: 24,
        batches: 2,
    };
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out, WallClock::with_offset(0), true);
        for r in records() {
            sink.record(&r).unwrap();
        }
        sink.loss(&loss).unwrap();
    }
    let got = String::from_utf8(out).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/testdata/record.golden.jsonl"
    );
    if std::env::var_os("NSTRACE_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).expect("the golden file");
    assert_eq!(
        got, want,
        "the JSON Lines changed (NSTRACE_BLESS=1 to accept)"
    );
    let back: Vec<Entry> = want.lines().map(|l| parse_line(l).unwrap()).collect();
    let (read, losses): (Vec<_>, Vec<_>) = back
        .into_iter()
        .partition(|e| matches!(e, Entry::Record(_)));
    let read: Vec<Record> = read
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record(r) => Some(r),
            _ => None,
        })
        .collect();
    // Every field a record holds goes through (the JSON drops only what it derives).
    let expected = records();
    assert_eq!(read, expected);
    assert!(matches!(&losses[..], [Entry::Loss(l)] if *l == loss));
}

#[test]
fn a_container_line_reads_back_and_an_unknown_runtime_is_a_bad_line() {
    let container = crate::container::Container {
        runtime: "containerd",
        id: "abc".into(),
        pod: Some("0d8c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b".into()),
    };
    let names = crate::names::Names {
        name: Some("web".into()),
        pod: Some("shop-7d9f".into()),
        pod_namespace: Some("prod".into()),
        ..Default::default()
    };
    let line = serde_json::to_string(&ContainerLine::new(&container, &names)).unwrap();
    match parse_line(&line) {
        Ok(Entry::Container(c, n)) => assert_eq!((c, n), (container, names)),
        _ => panic!("not a container entry: {line}"),
    }
    let forged = line.replace("containerd", "evil");
    let error = parse_line(&forged).err().expect("a bad line");
    assert!(error.contains("unknown container runtime"), "{error}");
}
