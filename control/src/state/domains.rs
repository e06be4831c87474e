//! The short domains as this process last read them: for building short
//! URLs and resolving `domain` parameters without a store read per request.
//! Whatever must hold at commit (that a domain exists) is checked again in
//! the transaction; a domain's name and scope never change, so a stale copy
//! can only lag in its settings, and a miss reads the store again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::db::{Backend, StoreResult};
use crate::domain::domains::{self, DomainDoc, split_key};

/// Every short domain, by name, and which is the default.
#[derive(Debug, Default)]
pub struct DomainTable {
    pub by_name: HashMap<String, DomainDoc>,
    pub default: Option<String>,
}

impl DomainTable {
    fn read(backend: &dyn Backend) -> StoreResult<Self> {
        backend.read(|txn| {
            Ok(Self {
                by_name: domains::list(txn)?
                    .into_iter()
                    .map(|d| (d.name.clone(), d))
                    .collect(),
                default: domains::default_name(txn)?,
            })
        })
    }

    /// The default domain.
    #[must_use]
    pub fn default_domain(&self) -> Option<&DomainDoc> {
        self.by_name.get(self.default.as_deref()?)
    }

    /// The domain a link's table key belongs to.
    #[must_use]
    pub fn of_key(&self, key: &str) -> Option<&DomainDoc> {
        match split_key(key) {
            (Some(name), _) => self.by_name.get(name),
            (None, _) => self.by_name.values().find(|d| !d.scoped),
        }
    }
}

/// The shared, swappable table.
#[derive(Debug, Default)]
pub struct Domains(RwLock<Arc<DomainTable>>);

impl Domains {
    /// The table as last read.
    #[must_use]
    pub fn current(&self) -> Arc<DomainTable> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Reads the table from the store again.
    pub fn refresh(&self, backend: &dyn Backend) -> StoreResult<Arc<DomainTable>> {
        let table = Arc::new(DomainTable::read(backend)?);
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&table);
        Ok(table)
    }

    /// The domain `name`, reading the store again if this copy lacks it.
    pub fn find(&self, backend: &dyn Backend, name: &str) -> StoreResult<Option<DomainDoc>> {
        if let Some(doc) = self.current().by_name.get(name) {
            return Ok(Some(doc.clone()));
        }
        Ok(self.refresh(backend)?.by_name.get(name).cloned())
    }
}
