//! Writer, reader and overlay against a `HashMap` model.

use std::collections::HashMap;

use proptest::prelude::*;
use shortline_store::{Change, Code, LinkRecord, LiveTable, Seq, Snapshot, encode_snapshot};

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
