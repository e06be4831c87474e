//! Group commit: one thread owns the store's write path, drains whatever
//! requests are waiting into one transaction and pays for one durable commit.
//! While a commit is being synced, new requests queue up for the next one, so
//! the batch size follows the load on its own.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam::channel::{Receiver, Sender, TrySendError, bounded};
use shortline_store::Seq;
use tokio::sync::{oneshot, watch};

use crate::db::{Backend, StoreError, StoreResult, Txn};

/// Why a write did not commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The queue is at `commit_queue_max`: the store is behind; retry.
    #[error("the write queue is full; retry shortly")]
    QueueFull,
    /// The committer thread is gone (the process is stopping).
    #[error("the committer has stopped")]
    Stopped,
    /// The store failed the transaction.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The newest committed sequence and when its commit returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub seq: Seq,
    pub at: Instant,
}

type Apply = Box<dyn FnMut(&mut dyn Txn) -> StoreResult<()> + Send>;
type Finish = Box<dyn FnOnce(StoreResult<Seq>) + Send>;

struct Job {
    apply: Apply,
    finish: Finish,
}

/// Hands write bodies to the committer thread.
#[derive(Debug, Clone)]
pub struct Committer {
    queue: Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Committer {
    /// Starts the committer thread. Every commit's sequence is published on `committed`.
    pub fn start(
        backend: Arc<dyn Backend>,
        queue_max: usize,
        batch_max: usize,
        committed: Arc<watch::Sender<Committed>>,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = bounded(queue_max);
        std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || run(&*backend, &jobs, batch_max, &committed))?;
        Ok(Self { queue })
    }

    /// Runs `body` in a transaction shared with other waiting writes and
    /// returns its value once the transaction is durable. The body may run
    /// more than once, so it must only act through the transaction.
    pub async fn write<T, F>(&self, mut body: F) -> Result<T, CommitError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Txn) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let written = Arc::clone(&slot);
        let job = Job {
            apply: Box::new(move |txn| {
                let value = body(txn)?;
                *written.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                Ok(())
            }),
            finish: Box::new(move |result| {
                let value = result.map(|_| slot.lock().unwrap_or_else(|e| e.into_inner()).take());
                let _ = reply.send(value);
            }),
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("control_commit_queue_full_total").increment(1);
                return Err(CommitError::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => return Err(CommitError::Stopped),
        }
        match answer.await {
            Ok(Ok(Some(value))) => Ok(value),
            Ok(Ok(None)) => unreachable!("a committed job's body ran and left its value"),
            Ok(Err(e)) => Err(CommitError::Store(e)),
            Err(_) => Err(CommitError::Stopped),
        }
    }
}

fn run(
    backend: &dyn Backend,
    jobs: &Receiver<Job>,
    batch_max: usize,
    committed: &watch::Sender<Committed>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("control_commit_batch_size").record(batch.len() as f64);
        let result = commit(backend, &mut batch);
        if result.is_err() && batch.len() > 1 {
            // One bad job must not fail its neighbours: retry each alone.
            metrics::counter!("control_commit_batch_split_total").increment(1);
            for mut job in batch {
                let result = commit(backend, std::slice::from_mut(&mut job));
                publish(committed, &result);
                (job.finish)(result);
            }
            continue;
        }
        publish(committed, &result);
        for job in batch {
            (job.finish)(result.clone());
        }
    }
}

fn commit(backend: &dyn Backend, batch: &mut [Job]) -> StoreResult<Seq> {
    debug_assert!(!batch.is_empty(), "a commit carries at least one write");
    let started = Instant::now();
    let result = backend.write(&mut |txn| {
        for job in batch.iter_mut() {
            (job.apply)(txn)?;
        }
        Ok(())
    });
    metrics::histogram!("control_store_commit_seconds").record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!("control_store_commit_errors_total").increment(1);
        tracing::warn!(error = %e.chain(), jobs = batch.len(), "store commit failed");
    }
    result
}

fn publish(committed: &watch::Sender<Committed>, result: &StoreResult<Seq>) {
    if let Ok(seq) = result {
        publish_seq(committed, *seq);
    }
}

/// Publishes `seq` if it is newer than the one published.
pub fn publish_seq(committed: &watch::Sender<Committed>, seq: Seq) {
    committed.send_if_modified(|current| {
        if seq > current.seq {
            *current = Committed {
                seq,
                at: Instant::now(),
            };
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    //! The committer over the embedded store, with a gate in front of the
    //! store's write so a test can hold a commit open while more writes
    //! queue behind it. Every wait is for a condition, with a long deadline.

    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::db::redb::RedbBackend;
    use crate::db::{Space, View};

    /// The embedded store behind a gate that holds every commit until it
    /// is opened, counting commits.
    struct Gated {
        store: RedbBackend,
        open: Mutex<bool>,
        opened: Condvar,
        commits: AtomicUsize,
        entered: AtomicUsize,
        panic: AtomicBool,
    }

    impl Gated {
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    impl Backend for Gated {
        fn write(&self, body: &mut dyn FnMut(&mut dyn Txn) -> StoreResult<()>) -> StoreResult<Seq> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            drop(open);
            assert!(!self.panic.load(Ordering::SeqCst), "the store failed hard");
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.store.write(body)
        }

        fn view(&self, body: &mut dyn FnMut(&dyn View) -> StoreResult<()>) -> StoreResult<()> {
            self.store.view(body)
        }

        fn prune_changes(&self, through: Seq) -> StoreResult<u64> {
            self.store.prune_changes(through)
        }

        fn name(&self) -> &'static str {
            "gated redb"
        }
    }

    struct Setup {
        gated: Arc<Gated>,
        committer: Committer,
        committed: watch::Receiver<Committed>,
        runtime: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
    }

    fn setup(queue_max: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let gated = Arc::new(Gated {
            store: RedbBackend::open(dir.path()).unwrap(),
            open: Mutex::new(false),
            opened: Condvar::new(),
            commits: AtomicUsize::new(0),
            entered: AtomicUsize::new(0),
            panic: AtomicBool::new(false),
        });
        let (tx, committed) = watch::channel(Committed {
            seq: Seq(0),
            at: Instant::now(),
        });
        let backend: Arc<dyn Backend> = Arc::clone(&gated) as Arc<dyn Backend>;
        let committer = Committer::start(backend, queue_max, 100, Arc::new(tx)).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Setup {
            gated,
            committer,
            committed,
            runtime,
            _dir: dir,
        }
    }

    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    type Reply<T> = tokio::task::JoinHandle<Result<T, CommitError>>;

    impl Setup {
        /// Queues a write that stores `key` and logs a change.
        fn put(&self, key: &'static str) -> Reply<&'static str> {
            let committer = self.committer.clone();
            self.runtime.spawn(async move {
                committer
                    .write(move |txn| {
                        txn.set(Space::Meta, key.as_bytes(), b"v")?;
                        txn.log_change(key.as_bytes())?;
                        Ok(key)
                    })
                    .await
            })
        }

        fn answer<T>(&self, reply: Reply<T>) -> Result<T, CommitError> {
            self.runtime.block_on(reply).unwrap()
        }

        fn stored(&self, key: &str) -> bool {
            let backend: &dyn Backend = &self.gated.store;
            backend
                .read(|txn| txn.get(Space::Meta, key.as_bytes()))
                .unwrap()
                .is_some()
        }
    }

    #[test]
    fn writes_that_wait_together_share_one_commit() {
        let s = setup(100);
        let first = s.put("first");
        wait_until("the first commit to start", || {
            s.gated.entered.load(Ordering::SeqCst) == 1
        });
        let rest: Vec<_> = ["a", "b", "c"].into_iter().map(|k| s.put(k)).collect();
        wait_until("three writes queued", || s.committer.queue.len() == 3);
        s.gated.open();
        assert_eq!(s.answer(first).unwrap(), "first");
        for (reply, key) in rest.into_iter().zip(["a", "b", "c"]) {
            assert_eq!(s.answer(reply).unwrap(), key);
            assert!(s.stored(key));
        }
        assert_eq!(
            s.gated.commits.load(Ordering::SeqCst),
            2,
            "one batch of three"
        );
        assert_eq!(
            s.committed.borrow().seq,
            Seq(4),
            "the newest sequence is published"
        );
    }

    #[test]
    fn a_failing_write_fails_alone_and_leaves_nothing() {
        let s = setup(100);
        let first = s.put("first");
        wait_until("the first commit to start", || {
            s.gated.entered.load(Ordering::SeqCst) == 1
        });
        let before = s.put("before");
        let committer = s.committer.clone();
        let bad: Reply<()> = s.runtime.spawn(async move {
            committer
                .write(|txn| {
                    txn.set(Space::Meta, b"bad", b"v")?;
                    Err(StoreError::Corrupt("refused by the test".into()))
                })
                .await
        });
        let after = s.put("after");
        wait_until("three writes queued", || s.committer.queue.len() == 3);
        s.gated.open();
        s.answer(first).unwrap();
        assert_eq!(s.answer(before).unwrap(), "before");
        assert_eq!(s.answer(after).unwrap(), "after");
        assert!(matches!(
            s.answer(bad),
            Err(CommitError::Store(StoreError::Corrupt(_)))
        ));
        assert!(s.stored("before") && s.stored("after"));
        assert!(!s.stored("bad"), "a failed job's writes are rolled back");
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let s = setup(1);
        let first = s.put("first");
        wait_until("the first commit to start", || {
            s.gated.entered.load(Ordering::SeqCst) == 1
        });
        let queued = s.put("queued");
        wait_until("one write queued", || s.committer.queue.len() == 1);
        assert!(matches!(
            s.answer(s.put("refused")),
            Err(CommitError::QueueFull)
        ));
        s.gated.open();
        s.answer(first).unwrap();
        s.answer(queued).unwrap();
        assert!(!s.stored("refused"));
    }

    #[test]
    fn writes_after_the_committer_dies_say_it_stopped() {
        let s = setup(100);
        s.gated.panic.store(true, Ordering::SeqCst);
        s.gated.open();
        assert!(matches!(s.answer(s.put("lost")), Err(CommitError::Stopped)));
        wait_until("the committer thread to end", || {
            s.committer
                .queue
                .try_send(dead_job())
                .is_err_and(|e| e.is_disconnected())
        });
        assert!(matches!(
            s.answer(s.put("later")),
            Err(CommitError::Stopped)
        ));
    }

    fn dead_job() -> Job {
        Job {
            apply: Box::new(|_| Ok(())),
            finish: Box::new(|_| {}),
        }
    }
}
