//! The metadata store: a small key-value interface with explicit transactions,
//! shaped so FoundationDB fits it as well as the embedded store.
//!
//! Keys live in [`Space`]s (tables in redb, subspaces in FoundationDB). A write
//! transaction may read, write, clear, scan, add atomically to a counter and
//! append to the change log. Everything in one transaction commits together
//! and durably, or not at all.

// The suite every backend passes; compiled for tests only, never shipped.
pub mod backup;
#[cfg(test)]
pub mod conformance;
#[cfg(feature = "fdb")]
pub mod fdb;
pub mod keys;
pub mod redb;
pub mod wal;

use std::sync::Arc;

use shortline_store::Seq;

/// A keyspace. The names are part of the on-disk layout: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// code -> link document.
    Links,
    /// Codes that existed once and were deleted; never handed out again.
    Retired,
    /// owner NUL code -> empty.
    ByOwner,
    /// tag NUL code -> empty.
    ByTag,
    /// key id -> API key document.
    Keys,
    /// SHA-256 of a token -> key id.
    KeyHashes,
    /// Named singletons: id counter, change sequence, secrets.
    Meta,
    /// Big-endian sequence -> change document.
    Changes,
    /// Counter key -> little-endian i64, changed only by atomic adds.
    Counters,
    /// Domain -> blocklist entry.
    Blocklist,
    /// Big-endian expiry time, code -> empty: links for the expiry sweeper.
    ByExpiry,
    /// proxy id -> highest click batch sequence counted, and when.
    IngestedBatches,
    /// Big-endian hour, link id -> empty: hourly stats buckets, for retention.
    StatsHours,
    /// Big-endian link id -> code, for every link ever created.
    ById,
    /// Big-endian link id -> code, for active links with `max_clicks`.
    Limited,
    /// Target host with its labels reversed and dot-ended
    /// (`example.evil.www.`), NUL, code -> empty: links by domain, for the
    /// blocklist's retroactive flagging.
    ByHost,
    /// Report id -> report document.
    Reports,
    /// Report id -> code, for open reports: the moderation queue.
    ReportsOpen,
    /// Short domain name (ASCII, lowercase) -> domain document.
    Domains,
    /// Big-endian link id, big-endian change number (from 1) -> the
    /// change of the link's target: its public destination history.
    History,
    /// Subscription id -> webhook document.
    Webhooks,
    /// Subscription id, NUL, big-endian queue number -> the event's body:
    /// what is still to be delivered, oldest first.
    WebhookQueue,
    /// Subscription id, NUL, big-endian log number -> a delivery attempt;
    /// the newest few are kept.
    WebhookLog,
    /// Big-endian Unix ms, random bytes -> a click flush's counts per link,
    /// waiting to be queued for the subscriptions to `link.clicks`.
    WebhookClicks,
    /// User id -> user document.
    Users,
    /// Email (lowercase) -> user id.
    UserEmails,
    /// SHA-256 of a session token -> session document.
    Sessions,
    /// User id, NUL, session id -> SHA-256 of the session's token.
    UserSessions,
    /// SHA-256 of an invitation or reset token -> its document.
    UserTokens,
}

impl Space {
    /// Every space, for backends that create them up front.
    pub const ALL: [Self; 29] = [
        Self::Links,
        Self::Retired,
        Self::ByOwner,
        Self::ByTag,
        Self::Keys,
        Self::KeyHashes,
        Self::Meta,
        Self::Changes,
        Self::Counters,
        Self::Blocklist,
        Self::ByExpiry,
        Self::IngestedBatches,
        Self::StatsHours,
        Self::ById,
        Self::Limited,
        Self::ByHost,
        Self::Reports,
        Self::ReportsOpen,
        Self::Domains,
        Self::History,
        Self::Webhooks,
        Self::WebhookQueue,
        Self::WebhookLog,
        Self::WebhookClicks,
        Self::Users,
        Self::UserEmails,
        Self::Sessions,
        Self::UserSessions,
        Self::UserTokens,
    ];

    /// The space's place in [`Space::ALL`], as redo records and sort files
    /// keep it.
    #[must_use]
    pub fn index(self) -> u8 {
        let index = Self::ALL
            .iter()
            .position(|s| *s == self)
            .expect("every space is in ALL");
        u8::try_from(index).expect("fewer than 256 spaces")
    }

    /// The stable name of the space.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Links => "links",
            Self::Retired => "retired",
            Self::ByOwner => "by_owner",
            Self::ByTag => "by_tag",
            Self::Keys => "keys",
            Self::KeyHashes => "key_hashes",
            Self::Meta => "meta",
            Self::Changes => "changes",
            Self::Counters => "counters",
            Self::Blocklist => "blocklist",
            Self::ByExpiry => "by_expiry",
            Self::IngestedBatches => "ingested_batches",
            Self::StatsHours => "stats_hours",
            Self::ById => "by_id",
            Self::Limited => "limited",
            Self::ByHost => "by_host",
            Self::Reports => "reports",
            Self::ReportsOpen => "reports_open",
            Self::Domains => "domains",
            Self::History => "history",
            Self::Webhooks => "webhooks",
            Self::WebhookQueue => "webhook_queue",
            Self::WebhookLog => "webhook_log",
            Self::WebhookClicks => "webhook_clicks",
            Self::Users => "users",
            Self::UserEmails => "user_emails",
            Self::Sessions => "sessions",
            Self::UserSessions => "user_sessions",
            Self::UserTokens => "user_tokens",
        }
    }
}

/// The underlying error of a [`StoreError`], shared so a commit's failure
/// can be handed to every request in its batch.
pub type Source = Arc<dyn std::error::Error + Send + Sync>;

/// A failure of the store itself (not of the caller's request). The message
/// says what failed; the source, when there is one, is the backend's own
/// error, for the log (never for clients).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store i/o failed: {context}")]
    Io {
        context: String,
        #[source]
        source: Source,
    },
    #[error("store is unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Source,
    },
    #[error("transaction conflicted too often; retry later")]
    Conflict,
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("transaction is too large: {0}")]
    TooLarge(String),
    /// A write the store does not take: a bulk load's key out of order or
    /// stored already, or a bulk load where there is none.
    #[error("the store refused the write: {0}")]
    Refused(String),
}

impl StoreError {
    /// An i/o failure while doing `context`.
    pub fn io(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Io {
            context: context.into(),
            source: Arc::from(source.into()),
        }
    }

    /// The backend cannot be reached while doing `context`.
    pub fn unavailable(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: Arc::from(source.into()),
        }
    }

    /// The error with every source, for logs: `outer: inner: innermost`.
    #[must_use]
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(error) = next {
            text.push_str(": ");
            text.push_str(&error.to_string());
            next = error.source();
        }
        text
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Key-value pairs from a range scan.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads of keys, shared by read views and write transactions. A write
/// transaction's reads see its own writes.
pub trait ReadTxn {
    fn get(&self, space: Space, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    /// The values of many keys, in the order of `keys`, for decisions that
    /// tolerate a moment's staleness: other transactions' writes to these
    /// keys do not make this one conflict (FoundationDB: snapshot reads,
    /// which also add nothing to the transaction's size). A backend where
    /// each read is a network round trip issues them all at once; the
    /// default reads one after another.
    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(space, key)).collect()
    }
    /// Up to `limit` pairs with `start <= key < end`, in key order.
    fn range(&self, space: Space, start: &[u8], end: &[u8], limit: usize) -> StoreResult<Pairs>;
}

/// A write transaction: reads, plus writes that commit together.
pub trait Txn: ReadTxn {
    fn set(&mut self, space: Space, key: &[u8], value: &[u8]) -> StoreResult<()>;
    fn clear(&mut self, space: Space, key: &[u8]) -> StoreResult<()>;
    /// Adds `delta` to a little-endian i64 counter (absent counts as zero)
    /// without reading it, so concurrent adds never conflict.
    fn add(&mut self, space: Space, key: &[u8], delta: i64) -> StoreResult<()>;
    /// [`Txn::add`] to a counter that only statistics read: other
    /// transactions' reads of it do not conflict with this add, so it costs
    /// only the mutation (on FoundationDB, no write conflict range: about
    /// two thirds of a counter's share of the 10 MB a transaction may hold).
    /// A counter whose reader decides something (a link's human clicks,
    /// for `max_clicks`) takes [`Txn::add`].
    fn add_statistic(&mut self, space: Space, key: &[u8], delta: i64) -> StoreResult<()> {
        self.add(space, key, delta)
    }
    /// Appends a change to the log. The sequence is assigned at commit and
    /// is greater than every sequence committed before; the changes of one
    /// transaction may share it (FoundationDB: the commit version).
    fn log_change(&mut self, change: &[u8]) -> StoreResult<()>;
}

/// A read-only view at one point in time, with the change log.
pub trait View: ReadTxn {
    /// The sequence of the newest change this view includes.
    fn last_seq(&self) -> StoreResult<Seq>;
    /// Changes with sequence greater than `after`, oldest first, up to
    /// `limit` (more when needed to end on a whole commit, so a reader
    /// resuming after the last sequence it saw misses nothing).
    fn changes_after(&self, after: Seq, limit: usize) -> StoreResult<Vec<(Seq, Vec<u8>)>>;
    /// The oldest change still in the log, if any.
    fn first_change(&self) -> StoreResult<Option<Seq>>;
    /// The sequence of the change `back` changes before the newest one at
    /// or below `seq` (`back` 0: that newest one), or `None` when the log
    /// holds fewer. Sequences are not counts (FoundationDB's are commit
    /// versions), so "keep the last N changes" is decided with this.
    fn change_behind(&self, seq: Seq, back: u64) -> StoreResult<Option<Seq>>;
    /// Every change at or below this sequence has been pruned: a reader
    /// resuming from below it must load a snapshot first.
    fn pruned_through(&self) -> StoreResult<Seq>;
}

/// A bulk load in progress ([`Backend::load`]).
pub trait Load {
    /// Stores a new key. Each space's keys come in ascending order (spaces
    /// may follow one another in any order), and none is stored already:
    /// a key out of order or already there is refused.
    fn put(&mut self, space: Space, key: &[u8], value: &[u8]) -> StoreResult<()>;
    /// Runs `body` in a write transaction that is part of the load: it sees
    /// every key put before it, and stands or falls with the load.
    fn write(&mut self, body: &mut dyn FnMut(&mut dyn Txn) -> StoreResult<()>) -> StoreResult<()>;
}

/// A backend: the embedded store or FoundationDB.
pub trait Backend: Send + Sync + 'static {
    /// Runs `body` in a write transaction and commits it durably. `body` may run
    /// more than once (a backend with optimistic concurrency retries on
    /// conflict), so it must not have effects outside the transaction.
    /// Returns the sequence of the last change logged, or the current one.
    fn write(&self, body: &mut dyn FnMut(&mut dyn Txn) -> StoreResult<()>) -> StoreResult<Seq>;

    /// Runs `body` against a consistent read view; `dyn Backend`'s `read`,
    /// which returns the body's value, is the way to call it. A backend
    /// with optimistic concurrency may run `body` again on a new view
    /// after a retryable failure.
    fn view(&self, body: &mut dyn FnMut(&dyn View) -> StoreResult<()>) -> StoreResult<()>;

    /// Removes changes with sequence at or below `through`.
    fn prune_changes(&self, through: Seq) -> StoreResult<u64>;

    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Loads many new keys at once, far faster than transactions: `body`
    /// puts them through a [`Load`], in key order. All or nothing: a load
    /// that fails, or a process killed during one, leaves the store as it
    /// was. The load's changes are not logged one by one: it ends by moving
    /// the change sequence ahead and marking the log pruned through it (as
    /// a restore does), so every reader of the log loads a snapshot next.
    /// Returns that sequence. Nothing else writes while a load runs. A
    /// backend without bulk loads refuses.
    fn load(&self, body: &mut dyn FnMut(&mut dyn Load) -> StoreResult<()>) -> StoreResult<Seq> {
        let _ = body;
        Err(StoreError::Refused(format!(
            "the {} store has no bulk load; write in transactions",
            self.name()
        )))
    }

    /// Whether other processes write to this store too (FoundationDB with a
    /// control sidecar per proxy host): their changes are then found by
    /// waiting on [`Backend::wait_for_changes`] and reading the log.
    fn shared(&self) -> bool {
        false
    }

    /// Blocks until a change may have been committed by any process, or for
    /// at most `timeout`. The log, not this signal, says what changed.
    fn wait_for_changes(&self, timeout: std::time::Duration) -> StoreResult<()> {
        std::thread::sleep(timeout);
        Ok(())
    }
}

impl dyn Backend {
    /// Runs `body` against a consistent read view and returns its value.
    /// A backend may run `body` again on a fresh view after a retryable
    /// failure, so it must only read.
    pub fn read<T>(&self, mut body: impl FnMut(&dyn View) -> StoreResult<T>) -> StoreResult<T> {
        let mut value = None;
        self.view(&mut |view| {
            value = Some(body(view)?);
            Ok(())
        })?;
        Ok(value.expect("the body ran"))
    }
}

impl std::fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.name())
    }
}

/// The exclusive upper bound of every key that starts with `prefix`.
#[must_use]
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}
