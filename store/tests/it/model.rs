//! Writer, reader and overlay against a `HashMap` model.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use shortline_store::{
    Change, Code, DeltaOf, InstallError, LinkRecord, LiveTable, Seq, Snapshot, encode_delta,
    encode_snapshot,
};

use crate::record;

#[derive(Debug, Clone)]
enum Op {
    Upsert(u8, u64),
    Delete(u8),
    Install,
    Lookup(u8),
}

fn code_name(n: u8) -> String {
    // A small key space so updates and deletes hit existing codes often.
    format!("c{}", n % 40)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), 1..1000u64).prop_map(|(c, v)| Op::Upsert(c, v)),
        2 => any::<u8>().prop_map(Op::Delete),
        1 => Just(Op::Install),
        3 => any::<u8>().prop_map(Op::Lookup),
    ]
}

fn check_all(table: &LiveTable, model: &HashMap<String, LinkRecord>) {
    let view = table.load();
    for n in 0..40u8 {
        let code = code_name(n);
        let got = view
            .get(code.as_bytes())
            .map(|v| v.to_record().expect("valid"));
        assert_eq!(got.as_ref(), model.get(&code), "code {code}");
    }
    assert!(view.get(b"absent").is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn live_table_matches_a_hashmap(ops in proptest::collection::vec(op(), 1..120)) {
        let mut model: HashMap<String, LinkRecord> = HashMap::new();
        let table = LiveTable::new(Snapshot::empty());
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Upsert(c, v) => {
                    seq += 1;
                    let code = code_name(c);
                    let r = record(&code, v);
                    model.insert(code.clone(), r.clone());
                    table.apply([Change { seq: Seq(seq), code: Code::parse(&code).unwrap(), record: Some(r) }]);
                }
                Op::Delete(c) => {
                    seq += 1;
                    let code = code_name(c);
                    model.remove(&code);
                    table.apply([Change { seq: Seq(seq), code: Code::parse(&code).unwrap(), record: None }]);
                }
                Op::Install => {
                    let bytes = encode_snapshot(Seq(seq), model.values()).unwrap();
                    table.install(Snapshot::from_bytes(bytes).unwrap()).unwrap();
                    prop_assert_eq!(table.load().overlay_len(), 0);
                }
                Op::Lookup(c) => {
                    let code = code_name(c);
                    let got = table.load().get(code.as_bytes()).map(|v| v.to_record().unwrap());
                    prop_assert_eq!(got.as_ref(), model.get(&code));
                }
            }
        }
        check_all(&table, &model);
        prop_assert_eq!(table.load().sequence(), Seq(seq));
    }

    #[test]
    fn snapshot_answers_exactly_its_records(
        codes in proptest::collection::hash_set("[A-Za-z0-9_-]{1,64}", 0..300),
        probes in proptest::collection::vec("[A-Za-z0-9_-]{1,64}", 0..100),
    ) {
        let model: HashMap<String, LinkRecord> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), record(c, i as u64)))
            .collect();
        let snapshot = Snapshot::from_bytes(encode_snapshot(Seq(1), model.values()).unwrap()).unwrap();
        prop_assert_eq!(snapshot.len(), model.len() as u64);
        for (code, r) in &model {
            let got = snapshot.get(code.as_bytes()).map(|v| v.to_record().unwrap());
            prop_assert_eq!(got.as_ref(), Some(r));
        }
        for probe in probes {
            let got = snapshot.get(probe.as_bytes()).map(|v| v.to_record().unwrap());
            prop_assert_eq!(got.as_ref(), model.get(&probe));
        }
    }

    /// Changes replayed out of order or twice (a resumed stream) converge to
    /// the same table as applying them once in order.
    #[test]
    fn replayed_changes_are_idempotent(versions in proptest::collection::vec((any::<u8>(), 1..50u64), 1..60), split in 0usize..60) {
        let changes: Vec<Change> = versions.iter().enumerate().map(|(i, (c, v))| {
            let code = code_name(*c);
            Change { seq: Seq(i as u64 + 1), code: Code::parse(&code).unwrap(), record: Some(record(&code, *v)) }
        }).collect();
        let once = LiveTable::new(Snapshot::empty());
        once.apply(changes.clone());
        let replayed = LiveTable::new(Snapshot::empty());
        let split = split.min(changes.len());
        replayed.apply(changes[..split].to_vec());
        replayed.apply(changes.clone());
        replayed.apply(changes[split..].iter().rev().cloned());
        for n in 0..40u8 {
            let code = code_name(n);
            let (a, b) = (once.load(), replayed.load());
            prop_assert_eq!(a.get(code.as_bytes()), b.get(code.as_bytes()));
        }
    }
}

#[derive(Debug, Clone)]
enum SegmentOp {
    Upsert(u8, u64),
    Delete(u8),
    /// Control writes a delta of the changes since the newest segment.
    Delta,
    /// Control merges every delta into one over the base.
    MergeDeltas,
    /// Control merges the base and the deltas into a new base.
    MergeAll,
    /// The proxy restarts from the segments and replays its journal.
    Restart,
    /// The proxy stops following control's segments...
    Pause,
    /// ...and catches up with every segment it lacks at once.
    CatchUp,
    Lookup(u8),
}

fn segment_op() -> impl Strategy<Value = SegmentOp> {
    prop_oneof![
        4 => (any::<u8>(), 1..1000u64).prop_map(|(c, v)| SegmentOp::Upsert(c, v)),
        2 => any::<u8>().prop_map(SegmentOp::Delete),
        2 => Just(SegmentOp::Delta),
        1 => Just(SegmentOp::MergeDeltas),
        1 => Just(SegmentOp::MergeAll),
        1 => Just(SegmentOp::Restart),
        1 => Just(SegmentOp::Pause),
        1 => Just(SegmentOp::CatchUp),
        2 => any::<u8>().prop_map(SegmentOp::Lookup),
    ]
}

/// What control holds: a base and deltas as file bytes, and the changes
/// since the newest.
struct Segments {
    base: Vec<u8>,
    deltas: Vec<Vec<u8>>,
}

impl Segments {
    fn open(&self) -> LiveTable {
        let deltas = self
            .deltas
            .iter()
            .map(|d| Snapshot::from_bytes(d.clone()).unwrap())
            .collect();
        LiveTable::with_deltas(Snapshot::from_bytes(self.base.clone()).unwrap(), deltas).unwrap()
    }

    fn base_id(&self) -> shortline_store::BaseId {
        Snapshot::from_bytes(self.base.clone()).unwrap().base_id()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Base + deltas + overlay answer like a `HashMap` through random
    /// deltas, merges of deltas, full merges and restarts.
    #[test]
    fn segments_and_overlay_match_a_hashmap(ops in proptest::collection::vec(segment_op(), 1..150)) {
        let mut model: HashMap<String, LinkRecord> = HashMap::new();
        let mut control = Segments {
            base: encode_snapshot(Seq(0), std::iter::empty::<LinkRecord>()).unwrap(),
            deltas: Vec::new(),
        };
        let mut pending: Vec<Change> = Vec::new();
        let mut table = control.open();
        let mut seq = 0u64;
        let mut following = true;
        for op in ops {
            match op {
                SegmentOp::Upsert(c, v) => {
                    seq += 1;
                    let code = code_name(c);
                    let r = record(&code, v);
                    model.insert(code.clone(), r.clone());
                    let change = Change { seq: Seq(seq), code: Code::parse(&code).unwrap(), record: Some(r) };
                    table.apply([change.clone()]);
                    pending.push(change);
                }
                SegmentOp::Delete(c) => {
                    seq += 1;
                    let code = code_name(c);
                    model.remove(&code);
                    let change = Change { seq: Seq(seq), code: Code::parse(&code).unwrap(), record: None };
                    table.apply([change.clone()]);
                    pending.push(change);
                }
                SegmentOp::Delta => {
                    if pending.is_empty() {
                        continue;
                    }
                    let parent = control.open().load().covered();
                    let mut newest: HashMap<Code, Option<LinkRecord>> = HashMap::new();
                    for change in pending.drain(..) {
                        newest.insert(change.code, change.record);
                    }
                    let of = DeltaOf { base: control.base_id(), parent };
                    let bytes = encode_delta(Seq(seq), of, newest.iter().map(|(c, r)| (c, r.as_ref()))).unwrap();
                    if following {
                        table.install(Snapshot::from_bytes(bytes.clone()).unwrap()).unwrap();
                        prop_assert_eq!(table.load().overlay_len(), 0);
                    }
                    control.deltas.push(bytes);
                }
                SegmentOp::MergeDeltas => {
                    if control.deltas.len() < 2 {
                        continue;
                    }
                    let chain = control.open().load_full();
                    let newer: Vec<_> = chain.newer_than_base().collect::<Result<_, _>>().unwrap();
                    let of = DeltaOf { base: control.base_id(), parent: chain.base().sequence() };
                    let bytes = encode_delta(chain.covered(), of, newer.iter().map(|(c, r)| (c, r.as_ref()))).unwrap();
                    // The proxy already covers this far: the merged delta is
                    // not newer, and the deltas it merged stay in place.
                    let refused = table.install(Snapshot::from_bytes(bytes.clone()).unwrap());
                    if following {
                        prop_assert!(matches!(refused, Err(InstallError::Older { .. })), "{:?}", refused);
                    }
                    control.deltas = vec![bytes];
                }
                SegmentOp::MergeAll => {
                    let chain = control.open().load_full();
                    let records: Vec<LinkRecord> = chain.records().collect::<Result<_, _>>().unwrap();
                    control.base = encode_snapshot(chain.covered(), &records).unwrap();
                    control.deltas.clear();
                    if following {
                        table.install(Snapshot::from_bytes(control.base.clone()).unwrap()).unwrap();
                    }
                }
                SegmentOp::Pause => following = false,
                SegmentOp::CatchUp => {
                    following = true;
                    let chain = control.open().load_full();
                    table
                        .install_chain(Arc::clone(chain.base()), chain.deltas().to_vec())
                        .unwrap();
                }
                SegmentOp::Restart => {
                    // The journal holds every change past the segments.
                    let journal = table.load().overlay_changes();
                    table = control.open();
                    table.apply(journal);
                    following = true;
                }
                SegmentOp::Lookup(c) => {
                    let code = code_name(c);
                    let got = table.load().get(code.as_bytes()).map(|v| v.to_record().unwrap());
                    prop_assert_eq!(got.as_ref(), model.get(&code));
                }
            }
            // Control's segments alone agree with the model less the pending changes.
            let chain = control.open().load_full();
            let mut merged: Vec<LinkRecord> = chain.records().collect::<Result<_, _>>().unwrap();
            merged.sort_by(|a, b| a.code.cmp(&b.code));
            if pending.is_empty() {
                let mut want: Vec<LinkRecord> = model.values().cloned().collect();
                want.sort_by(|a, b| a.code.cmp(&b.code));
                prop_assert_eq!(merged, want);
            }
        }
        check_all(&table, &model);
        prop_assert_eq!(table.load().sequence(), Seq(seq));
    }
}
