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
        tracing::warn!(error = %e, jobs = batch.len(), "store commit failed");
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
