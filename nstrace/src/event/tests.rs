use nstrace_common::{flags, slot};

use super::*;

#[test]
fn a_batch_splits_into_its_records() {
    let setns = encode(&setns_record());
    let mut exit = wire::Lifecycle::EMPTY;
    exit.header.kind = record::EXIT;
    exit.tid = 43;
    let exit = encode(&exit);
    let moved = encode_move(&setns_record());
    let sample = encode_batch(&[&setns[..wire::TRANSITION_SHORT], &exit, &moved, &setns]);
    let kinds: Vec<_> = records(&sample)
        .map(|r| match decode(r.expect("a record")) {
            Ok(Record::Transition(t)) => format!("{:?} {}", t.call, t.tid),
            Ok(Record::Exit(x)) => format!("exit {}", x.tid),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["Setns 43", "exit 43", "Setns 43", "Setns 43"]);
}

/// A move decodes to the transition its whole record decodes to, whatever changed.
#[test]
fn a_move_carries_only_what_changed_and_decodes_whole() {
    let mut cases = Vec::new();
    let one = setns_record();
    cases.push(one);
    let mut none = one;
    none.after = none.before;
    none.ret = -1;
    cases.push(none);
    let mut ids = one;
    ids.before.id = [7; NS_SLOTS];
    ids.after.id = ids.before.id;
    // A reused inode: the id alone differs.
    ids.after.id[slot::NET] = 9;
    ids.after.inum[slot::TIME_FOR_CHILDREN] += 1;
    cases.push(ids);
    let mut all = one;
    all.call = call::UNSHARE;
    all.fd = -1;
    for slot in 0..NS_SLOTS {
        all.after.inum[slot] += 100;
        all.after.id[slot] = 1 << 40 | slot as u64;
    }
    cases.push(all);
    for raw in cases {
        let moved = encode_move(&raw);
        let changed = decode(&encode(&raw))
            .map(|r| match r {
                Record::Transition(t) => t.changed().len(),
                _ => panic!("a transition"),
            })
            .unwrap();
        assert_eq!(
            moved.len(),
            wire::TRANSITION_HEAD + 8 + changed * wire::MOVE_SLOT_BYTES
        );
        let (whole, part) = (decode(&encode(&raw)).unwrap(), decode(&moved).unwrap());
        assert_eq!(whole, part);
    }
}

#[test]
fn a_move_naming_slots_it_lacks_or_no_slot_is_an_error() {
    let moved = encode_move(&setns_record());
    let head = wire::TRANSITION_HEAD;
    assert!(matches!(
        decode(&moved[..moved.len() - 8]),
        Err(DecodeError::Short { .. })
    ));
    assert!(matches!(
        decode(&moved[..head + 4]),
        Err(DecodeError::Short { .. })
    ));
    let mut bad = moved.clone();
    bad[head..head + 8].copy_from_slice(&(1u64 << 10 | 1 << slot::UTS).to_ne_bytes());
    assert!(matches!(decode(&bad), Err(DecodeError::BadSlots(_))));
    let mut many = moved;
    many[head..head + 8].copy_from_slice(&0x3ffu64.to_ne_bytes());
    assert!(matches!(decode(&many), Err(DecodeError::Short { .. })));
}

#[test]
fn a_record_with_an_impossible_length_ends_its_sample() {
    let setns = encode(&setns_record());
    for len in [0u32, 7, 12, 20_000] {
        let mut sample = encode_batch(&[&setns, &setns]);
        sample[12..16].copy_from_slice(&len.to_ne_bytes());
        let got: Vec<_> = records(&sample).collect();
        assert_eq!(got.len(), 1, "length {len}");
        assert!(
            matches!(got[0], Err(DecodeError::BadLength { .. })),
            "length {len}: {:?}",
            got[0]
        );
    }
    assert_eq!(records(&[]).count(), 0);
    assert_eq!(records(&[0; 7]).count(), 0, "padding alone is not a record");
}

/// A setns of pid 42 from uts 4026531838 to 4026532177.
pub(crate) fn setns_record() -> wire::Transition {
    let mut raw = wire::Transition::EMPTY;
    raw.header.ts_ns = 1_000;
    raw.call = call::SETNS;
    raw.flags = flags::CLONE_NEWUTS;
    raw.fd = 3;
    raw.tid = 43;
    raw.tgid = 42;
    raw.ppid = 1;
    raw.comm[..7].copy_from_slice(b"nsenter");
    for (i, inum) in raw.before.inum.iter_mut().enumerate() {
        *inum = 4026531830 + i as u32;
    }
    raw.after = raw.before;
    raw.after.inum[slot::UTS] = 4026532177;
    raw
}

#[test]
fn decodes_a_setns_with_padding_after_it() {
    let mut bytes = encode(&setns_record());
    bytes.extend_from_slice(&[0; 4]);
    let Ok(Record::Transition(t)) = decode(&bytes) else {
        panic!("a transition")
    };
    assert_eq!(t.call, Call::Setns);
    assert_eq!((t.pid, t.tid, t.ppid), (42, 43, 1));
    assert_eq!(t.comm, "nsenter");
    assert_eq!(t.fd, Some(3));
    assert_eq!(t.changed(), [NsKind::Uts]);
    assert_eq!(t.after.get(NsKind::Uts).inum, 4026532177);
    assert!(t.child.is_none());
    assert_eq!(t.errno(), None);
}

#[test]
fn a_short_record_is_an_error() {
    let bytes = encode(&setns_record());
    assert_eq!(
        decode(&bytes[..100]),
        Err(DecodeError::Short {
            len: 100,
            need: 328
        })
    );
    // A call without a child comes without the child part; one with a child may not.
    assert_eq!(
        decode(&bytes[..nstrace_common::TRANSITION_SHORT]),
        decode(&bytes)
    );
    let mut clone = setns_record();
    clone.call = nstrace_common::call::CLONE;
    assert_eq!(
        decode(&encode(&clone)[..400]),
        Err(DecodeError::Short {
            len: 400,
            need: 464
        })
    );
    assert!(matches!(
        decode(&bytes[..3]),
        Err(DecodeError::Short { .. })
    ));
    assert!(matches!(decode(&[]), Err(DecodeError::Short { .. })));
}

#[test]
fn unknown_kinds_and_calls_are_errors() {
    let mut raw = setns_record();
    raw.call = 99;
    assert_eq!(decode(&encode(&raw)), Err(DecodeError::UnknownCall(99)));
    raw.header.kind = 7;
    assert_eq!(decode(&encode(&raw)), Err(DecodeError::UnknownKind(7)));
}

#[test]
fn lifecycle_records_decode() {
    let mut raw = wire::Exec {
        life: wire::Lifecycle::EMPTY,
        filename: [0; wire::FILENAME_LEN],
    };
    raw.life.header.kind = record::EXEC;
    raw.life.tid = 7;
    raw.life.tgid = 7;
    raw.life.parent_tid = 9;
    raw.life.comm[..4].copy_from_slice(b"runc");
    raw.filename[..13].copy_from_slice(b"/usr/bin/runc");
    let Ok(Record::Exec(e)) = decode(&encode(&raw)) else {
        panic!("an exec")
    };
    assert_eq!((e.tid, e.old_tid), (7, 9));
    assert_eq!(
        (e.comm.as_str(), e.filename.as_str()),
        ("runc", "/usr/bin/runc")
    );

    let mut life = wire::Lifecycle::EMPTY;
    life.header.kind = record::EXIT;
    life.tid = 5;
    life.code = 256;
    life.group_dead = 1;
    let Ok(Record::Exit(x)) = decode(&encode(&life)) else {
        panic!("an exit")
    };
    assert!(x.group_dead);
    assert_eq!(x.code, 256);
    life.header.kind = record::FORK;
    life.parent_tid = 4;
    let Ok(Record::Fork(f)) = decode(&encode(&life)) else {
        panic!("a fork")
    };
    assert_eq!((f.tid, f.parent_tid), (5, 4));
    // An exec record cut to a lifecycle's size is short.
    assert!(matches!(
        decode(&encode(&raw)[..72]),
        Err(DecodeError::Short { len: 72, need: 200 })
    ));
}

#[test]
fn an_absurd_return_value_does_not_overflow() {
    // Found by fuzzing the decoder.
    let mut raw = setns_record();
    raw.ret = i64::MIN;
    let Ok(Record::Transition(t)) = decode(&encode(&raw)) else {
        panic!("a transition")
    };
    assert_eq!(t.errno(), Some(i32::MAX));
}

#[test]
fn sets_differ_by_inode_or_by_id_alone_and_list_kinds_in_proc_order() {
    let mut a = NsSet::default();
    for slot in 0..NS_SLOTS {
        a.inum[slot] = 4026531830 + slot as u32;
        a.id[slot] = 100 + slot as u64;
    }
    let mut b = a;
    assert_eq!(a, b);
    assert!(a.differences(&b).is_empty());
    // The last slot by inode, the first by id only (a reused inode), one in between by both.
    b.inum[NsKind::TimeForChildren.slot()] += 1;
    b.id[NsKind::Mnt.slot()] += 1;
    b.inum[NsKind::Net.slot()] += 1;
    b.id[NsKind::Net.slot()] += 1;
    assert_ne!(a, b);
    let differ = a.differences(&b);
    assert_eq!(differ, [NsKind::Mnt, NsKind::Net, NsKind::TimeForChildren]);
    assert_eq!(differ.len(), 3);
    assert!(differ.contains(NsKind::Net) && !differ.contains(NsKind::Uts));
    assert_eq!(differ.iter().len(), 3);
    for slot in 0..NS_SLOTS {
        let mut c = a;
        c.id[slot] ^= 1 << 40;
        assert_ne!(a, c, "an id differing in its high half, slot {slot}");
        assert_eq!(a.differences(&c), [NsKind::ALL[slot]]);
    }
}

#[test]
fn a_failed_call_keeps_its_errno() {
    let mut raw = setns_record();
    raw.ret = -22;
    raw.after = raw.before;
    let Ok(Record::Transition(t)) = decode(&encode(&raw)) else {
        panic!("a transition")
    };
    assert_eq!(t.errno_name().as_deref(), Some("EINVAL"));
    assert!(t.changed().is_empty());
}

#[test]
fn a_clone_reports_where_its_child_was_born() {
    let mut raw = setns_record();
    raw.call = call::CLONE3;
    raw.flags = flags::CLONE_NEWPID | flags::CLONE_NEWNET;
    raw.after = raw.before;
    raw.ret = 77;
    raw.child_tid = 77;
    raw.child_ns_tid = 1;
    raw.child = raw.before;
    raw.child.inum[slot::PID] = 4026532300;
    raw.child.inum[slot::PID_FOR_CHILDREN] = 4026532300;
    raw.child.inum[slot::NET] = 4026532301;
    let Ok(Record::Transition(t)) = decode(&encode(&raw)) else {
        panic!("a transition")
    };
    assert!(t.changed().is_empty());
    assert_eq!(
        t.child_moved(),
        [NsKind::Pid, NsKind::PidForChildren, NsKind::Net]
    );
    assert_eq!(t.child.as_ref().map(|c| c.ns_tid), Some(1));
    assert_eq!(t.flag_names(), ["CLONE_NEWPID", "CLONE_NEWNET"]);
}
