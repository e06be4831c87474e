//! The embedded backend: one redb database file in the data directory.
//!
//! redb is pure Rust, ACID and crash-safe (copy-on-write B-trees with a
//! checksummed commit slot). It allows one write transaction at a time, which
//! suits group commit: the committer runs many requests in one transaction and
//! pays for one fsync.

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use shortline_store::Seq;

use std::cell::RefCell;

use super::{Backend, Pairs, ReadTxn, Space, StoreError, StoreResult, Txn, View, keys};

fn definition(space: Space) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(space.name())
}

fn io<E: Into<redb::Error>>(error: E) -> StoreError {
    StoreError::io("redb", error.into())
}

/// The embedded store.
#[derive(Debug)]
pub struct RedbBackend {
    db: Database,
    path: PathBuf,
}

impl RedbBackend {
    /// Opens (or creates) `shortline.redb` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = shortline_common::layout::DataDir::new(data_dir).store_file();
        let db = Database::create(&path).map_err(|e| {
            StoreError::io(format!("cannot open the store at {}", path.display()), e)
        })?;
        let txn = db.begin_write().map_err(io)?;
        for space in Space::ALL {
            txn.open_table(definition(space)).map_err(io)?;
        }
        txn.commit().map_err(io)?;
        Ok(Self { db, path })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

type BytesTable<'t> = Table<'t, &'static [u8], &'static [u8]>;

struct RedbTxn<'t> {
    txn: &'t WriteTransaction,
    /// Tables opened so far: redb opens a table once per transaction.
    tables: RefCell<Vec<(Space, BytesTable<'t>)>>,
    seq: Option<u64>,
    logged: bool,
}

impl<'t> RedbTxn<'t> {
    fn with_table<R>(
        &self,
        space: Space,
        body: impl FnOnce(&mut BytesTable<'t>) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut tables = self.tables.borrow_mut();
        let at = match tables.iter().position(|(s, _)| *s == space) {
            Some(at) => at,
            None => {
                let table = self.txn.open_table(definition(space)).map_err(io)?;
                tables.push((space, table));
                tables.len() - 1
            }
        };
        body(&mut tables[at].1)
    }

    fn current_seq(&mut self) -> StoreResult<u64> {
        if let Some(seq) = self.seq {
            return Ok(seq);
        }
        let seq = match self.get(Space::Meta, keys::SEQ)? {
            Some(bytes) => decode_u64(&bytes)?,
            None => 0,
        };
        self.seq = Some(seq);
        Ok(seq)
    }
}

fn decode_u64(bytes: &[u8]) -> StoreResult<u64> {
    Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| {
        StoreError::Corrupt("sequence is not 8 bytes".into())
    })?))
}

impl ReadTxn for RedbTxn<'_> {
    fn get(&self, space: Space, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.with_table(space, |table| {
            Ok(table.get(key).map_err(io)?.map(|v| v.value().to_vec()))
        })
    }

    fn range(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> StoreResult<Pairs> {
        self.with_table(space, |table| collect_range(table, start, end, limit))
    }
}

impl Txn for RedbTxn<'_> {
    fn set(&mut self, space: Space, key: &[u8], value: &[u8]) -> StoreResult<()> {
        self.with_table(space, |table| {
            table.insert(key, value).map_err(io)?;
            Ok(())
        })
    }

    fn clear(&mut self, space: Space, key: &[u8]) -> StoreResult<()> {
        self.with_table(space, |table| {
            table.remove(key).map_err(io)?;
            Ok(())
        })
    }

    fn add(&mut self, space: Space, key: &[u8], delta: i64) -> StoreResult<()> {
        self.with_table(space, |table| {
            let current = match table.get(key).map_err(io)? {
                Some(v) => i64::from_le_bytes(
                    v.value()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("counter is not 8 bytes".into()))?,
                ),
                None => 0,
            };
            table
                .insert(key, &current.wrapping_add(delta).to_le_bytes()[..])
                .map_err(io)?;
            Ok(())
        })
    }

    fn log_change(&mut self, change: &[u8]) -> StoreResult<()> {
        let seq = self.current_seq()? + 1;
        self.seq = Some(seq);
        self.logged = true;
        self.with_table(Space::Changes, |table| {
            table.insert(&keys::change(seq)[..], change).map_err(io)?;
            Ok(())
        })
    }
}

fn collect_range<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> StoreResult<Pairs> {
    if start >= end {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in table.range::<&[u8]>(start..end).map_err(io)? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = item.map_err(io)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

struct RedbRead {
    txn: ReadTransaction,
}

impl RedbRead {
    fn table(&self, space: Space) -> StoreResult<ReadOnlyTable<&'static [u8], &'static [u8]>> {
        self.txn.open_table(definition(space)).map_err(io)
    }
}

impl ReadTxn for RedbRead {
    fn get(&self, space: Space, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .table(space)?
            .get(key)
            .map_err(io)?
            .map(|v| v.value().to_vec()))
    }

    fn range(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> StoreResult<Pairs> {
        collect_range(&self.table(space)?, start, end, limit)
    }
}

impl View for RedbRead {
    fn last_seq(&self) -> StoreResult<Seq> {
        match self.get(Space::Meta, keys::SEQ)? {
            Some(bytes) => Ok(Seq(decode_u64(&bytes)?)),
            None => Ok(Seq(0)),
        }
    }

    fn changes_after(&self, after: Seq, limit: usize) -> StoreResult<Vec<(Seq, Vec<u8>)>> {
        let start = keys::change(after.0.saturating_add(1));
        let pairs = collect_range(&self.table(Space::Changes)?, &start, &[0xff; 9], limit)?;
        pairs
            .into_iter()
            .map(|(k, v)| Ok((Seq(decode_seq_key(&k)?), v)))
            .collect()
    }

    fn pruned_through(&self) -> StoreResult<Seq> {
        match self.get(Space::Meta, keys::PRUNED)? {
            Some(bytes) => Ok(Seq(decode_u64(&bytes)?)),
            None => Ok(Seq(0)),
        }
    }

    fn change_behind(&self, seq: Seq, back: u64) -> StoreResult<Option<Seq>> {
        let table = self.table(Space::Changes)?;
        let through = keys::change(seq.0);
        let Some(found) = table
            .range::<&[u8]>(..=&through[..])
            .map_err(io)?
            .rev()
            .nth(usize::try_from(back).unwrap_or(usize::MAX))
        else {
            return Ok(None);
        };
        let (key, _) = found.map_err(io)?;
        Ok(Some(Seq(decode_seq_key(key.value())?)))
    }

    fn first_change(&self) -> StoreResult<Option<Seq>> {
        let table = self.table(Space::Changes)?;
        match table.first().map_err(io)? {
            Some((k, _)) => Ok(Some(Seq(decode_seq_key(k.value())?))),
            None => Ok(None),
        }
    }
}

fn decode_seq_key(key: &[u8]) -> StoreResult<u64> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| {
        StoreError::Corrupt("change key is not 8 bytes".into())
    })?))
}

impl Backend for RedbBackend {
    fn write(&self, body: &mut dyn FnMut(&mut dyn Txn) -> StoreResult<()>) -> StoreResult<Seq> {
        let txn = self.db.begin_write().map_err(io)?;
        let seq = {
            let mut handle = RedbTxn {
                txn: &txn,
                tables: RefCell::new(Vec::new()),
                seq: None,
                logged: false,
            };
            body(&mut handle)?;
            let seq = handle.current_seq()?;
            if handle.logged {
                handle.set(Space::Meta, keys::SEQ, &seq.to_le_bytes())?;
            }
            seq
        };
        // The default durability is immediate: commit returns after fsync.
        txn.commit().map_err(io)?;
        Ok(Seq(seq))
    }

    fn view(&self, body: &mut dyn FnMut(&dyn View) -> StoreResult<()>) -> StoreResult<()> {
        let txn = self.db.begin_read().map_err(io)?;
        body(&RedbRead { txn })
    }

    fn prune_changes(&self, through: Seq) -> StoreResult<u64> {
        let txn = self.db.begin_write().map_err(io)?;
        let removed = {
            let mut table = txn.open_table(definition(Space::Changes)).map_err(io)?;
            let end = keys::change(through.0.saturating_add(1));
            let mut removed = 0u64;
            table
                .retain_in::<&[u8], _>(&[0u8; 8][..]..&end[..], |_, _| {
                    removed += 1;
                    false
                })
                .map_err(io)?;
            let mut meta = txn.open_table(definition(Space::Meta)).map_err(io)?;
            let previous = match meta.get(keys::PRUNED).map_err(io)? {
                Some(v) => decode_u64(v.value())?,
                None => 0,
            };
            meta.insert(keys::PRUNED, &previous.max(through.0).to_le_bytes()[..])
                .map_err(io)?;
            removed
        };
        txn.commit().map_err(io)?;
        Ok(removed)
    }

    fn name(&self) -> &'static str {
        "redb"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RedbBackend::open(dir.path()).unwrap();
        super::super::conformance::run_all(&backend);
        super::super::conformance::run_concurrent(std::sync::Arc::new(backend));
    }

    #[test]
    fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let backend = RedbBackend::open(dir.path()).unwrap();
            backend
                .write(&mut |txn| {
                    txn.set(Space::Links, b"a", b"1")?;
                    txn.log_change(b"c")
                })
                .unwrap();
        }
        let backend = RedbBackend::open(dir.path()).unwrap();
        let backend: &dyn Backend = &backend;
        let seen = backend
            .read(|txn| Ok((txn.get(Space::Links, b"a")?, txn.last_seq()?)))
            .unwrap();
        assert_eq!(seen, (Some(b"1".to_vec()), Seq(1)));
    }

    #[test]
    fn a_garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shortline.redb"), vec![0x42; 4096]).unwrap();
        let err = RedbBackend::open(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("cannot open the store"), "{message}");
        assert!(message.contains("shortline.redb"), "{message}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "the redb error is kept as the source"
        );
    }
}
