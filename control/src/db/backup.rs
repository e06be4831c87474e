//! Online backup and restore of the embedded store.
//!
//! A backup is every key and value of every space (the change log aside:
//! proxies reload a snapshot after a restore) read in one read transaction,
//! so it is one consistent point in time while writes go on. The format is
//! newline-delimited JSON: a header line, one line per pair with key and
//! value in base64, and an end line with the count, so a cut-off file is
//! refused. The code permutation secret travels in the header: a backup is
//! as sensitive as the store and is kept like it.
//!
//! Restore writes into an empty store, then moves the change sequence far
//! ahead, so every proxy (whatever it saw before) loads a fresh snapshot.
//! With FoundationDB, use its own backup tools (`fdbbackup`), which copy a
//! live cluster without a long transaction.

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::db::{Backend, Space, StoreError, StoreResult, View, keys};

/// Pairs read per range call and written per restore transaction.
const PAGE: usize = 5000;
/// Beyond every key the store holds: codes, ids and hashes are at most 64
/// bytes, and the binary ones (ids, hashes) at most 32.
const KEY_END: [u8; 65] = [0xff; 65];
/// How far a restore moves the change sequence ahead.
pub const SEQUENCE_JUMP: u64 = 1 << 40;
const FORMAT: &str = "shortline-backup";
const VERSION: u32 = 1;

/// The first line of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The newest change the backup includes.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Hex of the code permutation secret (`permutation.key`).
    pub permutation_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pair {
    s: String,
    k: String,
    v: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct End {
    end: bool,
    records: u64,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::io("writing the backup", e)
}

/// Writes a backup of everything `txn` sees to `out`. Returns the pairs
/// written.
pub fn export(txn: &dyn View, permutation_key: &[u8], out: &mut dyn Write) -> StoreResult<u64> {
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        seq: txn.last_seq()?.0,
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        permutation_key: hex::encode(permutation_key),
    };
    line(out, &header)?;
    let mut records = 0;
    for space in Space::ALL {
        if space == Space::Changes {
            continue;
        }
        let mut start = Vec::new();
        loop {
            let page = txn.range(space, &start, &KEY_END, PAGE)?;
            for (key, value) in &page {
                line(
                    out,
                    &Pair {
                        s: space.name().into(),
                        k: STANDARD.encode(key),
                        v: STANDARD.encode(value),
                    },
                )?;
                records += 1;
            }
            let Some((last, _)) = page.last().filter(|_| page.len() == PAGE) else {
                break;
            };
            start.clone_from(last);
            start.push(0);
        }
    }
    line(out, &End { end: true, records })?;
    out.flush().map_err(io)?;
    Ok(records)
}

fn line<T: Serialize>(out: &mut dyn Write, value: &T) -> StoreResult<()> {
    let mut text = serde_json::to_vec(value).expect("backup lines always serialise");
    text.push(b'\n');
    out.write_all(&text).map_err(io)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub records: u64,
    pub seq: u64,
}

/// Pairs restored together.
type Page = [(Space, Vec<u8>, Vec<u8>)];
/// What a restore does with each page.
type PageSink<'a> = &'a mut dyn FnMut(&Page) -> Result<()>;

fn space_named(name: &str) -> Option<Space> {
    Space::ALL.into_iter().find(|s| s.name() == name)
}

/// Reads a whole backup, checking every line, and hands each page of pairs
/// to `page` (nothing when `page` is `None`: a dry run).
fn read_all(reader: &mut dyn BufRead, mut page: Option<PageSink<'_>>) -> Result<(Header, u64)> {
    let mut lines = reader.lines();
    let first = lines
        .next()
        .context("the backup is empty")?
        .context("cannot read the backup")?;
    let header: Header =
        serde_json::from_str(&first).context("the first line is not a backup header")?;
    if header.format != FORMAT || header.version != VERSION {
        bail!(
            "not a backup this version can restore ({} version {})",
            header.format,
            header.version
        );
    }
    let mut batch = Vec::with_capacity(PAGE);
    let mut records = 0u64;
    for (number, line) in lines.enumerate() {
        let line = line.context("cannot read the backup")?;
        if let Ok(end) = serde_json::from_str::<End>(&line) {
            if !end.end || end.records != records {
                bail!(
                    "the backup's end line counts {} records, the file has {records}",
                    end.records
                );
            }
            if let Some(page) = page.as_mut() {
                page(&batch)?;
            }
            return Ok((header, records));
        }
        let pair: Pair = serde_json::from_str(&line)
            .with_context(|| format!("line {} is not a backup record", number + 2))?;
        let space = space_named(&pair.s)
            .with_context(|| format!("line {}: unknown space {:?}", number + 2, pair.s))?;
        let key = STANDARD
            .decode(&pair.k)
            .with_context(|| format!("line {}: bad key", number + 2))?;
        let value = STANDARD
            .decode(&pair.v)
            .with_context(|| format!("line {}: bad value", number + 2))?;
        batch.push((space, key, value));
        records += 1;
        if batch.len() == PAGE {
            if let Some(page) = page.as_mut() {
                page(&batch)?;
            }
            batch.clear();
        }
    }
    bail!("the backup is cut off after {records} records (no end line)")
}

/// Checks a backup from end to end without writing anything.
pub fn verify(reader: &mut dyn BufRead) -> Result<(Header, u64)> {
    read_all(reader, None)
}

/// Restores a verified backup into an empty store.
pub fn import(backend: &dyn Backend, reader: &mut dyn BufRead) -> Result<Restored> {
    let mut empty = true;
    backend.read(|txn| {
        empty = txn.range(Space::Links, b"", &KEY_END, 1)?.is_empty()
            && txn.range(Space::Retired, b"", &KEY_END, 1)?.is_empty();
        Ok(())
    })?;
    if !empty {
        bail!("the store already holds links; restore into an empty data_dir");
    }
    let mut write_page = |pairs: &Page| -> Result<()> {
        backend.write(&mut |txn| {
            for (space, key, value) in pairs {
                txn.set(*space, key, value)?;
            }
            Ok(())
        })?;
        Ok(())
    };
    let (header, records) = read_all(reader, Some(&mut write_page))?;
    let seq = header.seq.saturating_add(SEQUENCE_JUMP);
    backend.write(&mut |txn| {
        txn.set(Space::Meta, keys::SEQ, &seq.to_le_bytes())?;
        txn.set(Space::Meta, keys::PRUNED, &seq.to_le_bytes())
    })?;
    Ok(Restored { records, seq })
}

/// The permutation secret of a backup header.
pub fn permutation_key(header: &Header) -> Result<[u8; 32]> {
    let text = &header.permutation_key;
    let bytes = hex::decode(text).context("the backup's permutation key is not hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the backup's permutation key is not 32 bytes"))
}
