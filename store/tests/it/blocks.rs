//! Block checksums: opening checks no block, a lookup checks the blocks it
//! reads, damage to any block is refused and named, and version 1 files
//! (one checksum over the whole body) are still read.

use shortline_store::{BlockDamage, LinkRecord, OpenError, Seq, Snapshot, encode_snapshot, format};

use crate::record;

fn records(n: u64) -> Vec<LinkRecord> {
    (0..n).map(|i| record(&format!("blk{i}"), i)).collect()
}

/// Enough links for a dozen blocks.
fn multi_block_file() -> (Vec<LinkRecord>, Vec<u8>) {
    let records = records(12_000);
    let file = encode_snapshot(Seq(4), &records).unwrap();
    let header = format::Header::decode(&file).unwrap();
    assert!(
        header.block_count() >= 10,
        "{} blocks",
        header.block_count()
    );
    (records, file)
}

#[test]
fn opening_checks_no_block_and_a_lookup_checks_only_what_it_reads() {
    let (records, file) = multi_block_file();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.snap");
    std::fs::write(&path, &file).unwrap();
    let snapshot = Snapshot::open(&path).unwrap();
    let (checked, total) = snapshot.checked_blocks();
    assert_eq!(checked, 0, "open read no block");
    assert_eq!(
        snapshot.get(records[17].code.as_bytes()),
        Some(records[17].view())
    );
    let (checked, _) = snapshot.checked_blocks();
    assert!(
        (1..=4).contains(&checked),
        "{checked} of {total} blocks checked"
    );
    snapshot.verify().unwrap();
    assert_eq!(snapshot.checked_blocks(), (total, total));
    for r in &records {
        assert_eq!(snapshot.get(r.code.as_bytes()), Some(r.view()));
    }
    assert_eq!(snapshot.damage(), None);
    assert_eq!(
        Snapshot::open_verified(&path).unwrap().len(),
        records.len() as u64
    );
}

#[test]
fn damage_in_any_block_is_named_and_never_answered_from() {
    let (records, file) = multi_block_file();
    let header = format::Header::decode(&file).unwrap();
    for block in 0..header.block_count() {
        let start = format::HEADER_SIZE as u64 + block * header.block_size;
        let end = (start + header.block_size).min(header.checksums_offset);
        let mut bad = file.clone();
        bad[((start + end) / 2) as usize] ^= 0x20;
        let want = BlockDamage { block, start, end };

        let eager = Snapshot::from_bytes(bad.clone()).unwrap_err();
        assert!(
            matches!(eager, OpenError::BlockChecksum { block: b, start: s, end: e } if (b, s, e) == (block, start, end)),
            "block {block}: {eager}"
        );
        assert!(
            eager.to_string().contains(&format!("block {block} ")),
            "{eager}"
        );

        let lazy = Snapshot::from_bytes_lazy(bad).expect("the table is intact, so it opens");
        let mut found = 0;
        for r in &records {
            match lazy.get(r.code.as_bytes()) {
                Some(view) => {
                    assert_eq!(view, r.view(), "block {block}: a wrong answer");
                    found += 1;
                }
                None => assert_eq!(lazy.damage(), Some(want), "a miss only through damage"),
            }
        }
        assert!(
            found < records.len(),
            "block {block}: some lookup read the damage"
        );
        assert!(found > 0, "block {block}: undamaged blocks still answer");
        assert!(
            matches!(lazy.verify(), Err(OpenError::BlockChecksum { block: b, .. }) if b == block)
        );
        let iterated: Result<Vec<_>, _> = lazy.iter().collect();
        assert!(
            block * header.block_size >= header.records_size || iterated.is_err(),
            "block {block}: iterating over damaged records is an error"
        );
    }
}

#[test]
fn a_damaged_checksum_table_is_refused_at_open() {
    let (_, file) = multi_block_file();
    let header = format::Header::decode(&file).unwrap();
    let mut bad = file.clone();
    bad[header.checksums_offset as usize + 3] ^= 1;
    assert!(matches!(
        Snapshot::from_bytes_lazy(bad),
        Err(OpenError::ChecksumTable)
    ));
}

/// Rewrites a version 2 file as version 1: no block checksums, one checksum
/// over everything after the header.
fn as_version_1(file: &[u8]) -> Vec<u8> {
    let header = format::Header::decode(file).unwrap();
    let body = &file[format::HEADER_SIZE..header.checksums_offset as usize];
    let v1 = format::Header {
        version: 1,
        file_size: header.checksums_offset,
        checksum: format::checksum(body),
        block_size: 0,
        ..header
    };
    let mut out = v1.encode().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn version_1_files_are_still_read_and_checked_whole() {
    let (records, file) = multi_block_file();
    let v1 = as_version_1(&file);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("links.snap");
    std::fs::write(&path, &v1).unwrap();
    let snapshot = Snapshot::open(&path).unwrap();
    assert_eq!(snapshot.checked_blocks(), (1, 1), "checked whole at open");
    for r in &records {
        assert_eq!(snapshot.get(r.code.as_bytes()), Some(r.view()));
    }
    assert_eq!(snapshot.verify_records().unwrap(), records.len() as u64);
    let mut bad = v1;
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        Snapshot::from_bytes_lazy(bad),
        Err(OpenError::BodyChecksum)
    ));
}

#[test]
fn verifying_while_others_look_up_answers_the_same() {
    let (records, file) = multi_block_file();
    let snapshot = Snapshot::from_bytes_lazy(file).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| snapshot.verify().unwrap());
        for _ in 0..2 {
            s.spawn(|| {
                for r in &records {
                    assert_eq!(snapshot.get(r.code.as_bytes()), Some(r.view()));
                }
            });
        }
    });
    let (checked, total) = snapshot.checked_blocks();
    assert_eq!(checked, total);
}
