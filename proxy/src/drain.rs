//! A quick, lossless stop. Pingora's graceful terminate broadcasts shutdown
//! and then sleeps out the whole grace period before it exits, even when
//! nothing is left to finish. [`Drain`] counts what must finish first: open
//! client connections (their requests are answered and their clicks
//! captured) and the background tasks that write out state (the click
//! batcher's last shipment). [`Exit`] ends
//! the process as soon as all of them are done, so an idle proxy stops in
//! milliseconds and a busy one as soon as it has drained; the grace period
//! stays the upper bound.
//!
//! SIGINT is treated as SIGTERM ([`Signals`]): Ctrl-C on a proxy in a
//! terminal drains and ships its clicks instead of dropping them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;

/// How often a stopping process looks at the counts. Shutdown only; the
/// redirect path never waits on it.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Open connections and unfinished stop tasks.
#[derive(Debug, Default)]
pub struct Drain {
    connections: AtomicUsize,
    tasks: AtomicUsize,
    /// Set when an upgrade hands the sockets over: keep-alive connections
    /// close after their current request.
    handing_over: AtomicBool,
    handed_over: tokio::sync::Notify,
}

/// Held while a connection is open or a stop task is unfinished.
#[derive(Debug)]
#[must_use = "the count drops when the guard does"]
pub struct DrainGuard {
    drain: Arc<Drain>,
    connection: bool,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        let count = if self.connection {
            &self.drain.connections
        } else {
            &self.drain.tasks
        };
        let before = count.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "a drain count went below zero");
    }
}

impl Drain {
    /// Counts one open client connection until the guard drops.
    pub fn connection(self: &Arc<Self>) -> DrainGuard {
        self.connections.fetch_add(1, Ordering::AcqRel);
        DrainGuard {
            drain: Arc::clone(self),
            connection: true,
        }
    }

    /// Counts one task that must finish before the process exits. Take it
    /// before the server runs, so a stop cannot overtake its registration.
    pub fn task(self: &Arc<Self>) -> DrainGuard {
        self.tasks.fetch_add(1, Ordering::AcqRel);
        DrainGuard {
            drain: Arc::clone(self),
            connection: false,
        }
    }

    /// Client connections open now.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Stop tasks not yet finished.
    #[must_use]
    pub fn tasks(&self) -> usize {
        self.tasks.load(Ordering::Acquire)
    }

    /// The sockets go to a new process: from now on this one answers the
    /// requests it has and closes each connection after its answer.
    pub fn hand_over(&self) {
        self.handing_over.store(true, Ordering::Release);
        self.handed_over.notify_waiters();
    }

    /// Whether [`Drain::hand_over`] has been called.
    #[must_use]
    pub fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Acquire)
    }

    /// Resolves once [`Drain::hand_over`] has been called.
    pub async fn handed_over(&self) {
        let notified = self.handed_over.notified();
        if self.handing_over() {
            return;
        }
        notified.await;
    }

    /// Resolves once no client connection is open.
    pub async fn connections_closed(&self) {
        while self.connections() > 0 {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Resolves once no connection is open and every stop task is done.
    pub async fn all_done(&self) {
        while self.connections() > 0 || self.tasks() > 0 {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Ends the process once shutdown has begun and the [`Drain`] is empty.
#[derive(Debug)]
pub struct Exit {
    pub drain: Arc<Drain>,
}

#[async_trait]
impl BackgroundService for Exit {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.drain.all_done().await;
        tracing::info!("drained; exiting");
        // Everything that must outlive the process is written: the last
        // click batch is acknowledged, and every change applied is in the
        // journal.
        std::process::exit(0);
    }
}

/// Pingora's signals, but SIGINT drains like SIGTERM instead of dropping
/// what is queued. SIGQUIT stays the graceful upgrade, after
/// `before_upgrade` has run: the proxy closes its journal there, so the new
/// process, which opens and replays it once it has the sockets, starts from
/// every link this one serves.
pub struct Signals {
    pub before_upgrade: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("before_upgrade", &self.before_upgrade.is_some())
            .finish()
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut quit), Ok(mut term), Ok(mut interrupt)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot watch signals; stopping");
            return ShutdownSignal::GracefulTerminate;
        };
        tokio::select! {
            _ = quit.recv() => {
                if let Some(before_upgrade) = &self.before_upgrade {
                    before_upgrade();
                }
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received; stopping as for SIGTERM");
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_uncount() {
        let drain = Arc::new(Drain::default());
        let a = drain.connection();
        let b = drain.connection();
        let task = drain.task();
        assert_eq!((drain.connections(), drain.tasks()), (2, 1));
        drop(a);
        assert_eq!(drain.connections(), 1);
        drop(task);
        assert_eq!(drain.tasks(), 0);
        drop(b);
        assert_eq!(drain.connections(), 0);
    }

    #[tokio::test]
    async fn all_done_waits_for_the_last_guard() {
        let drain = Arc::new(Drain::default());
        let connection = drain.connection();
        let task = drain.task();
        let waiter = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move { drain.all_done().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(connection);
        drain.connections_closed().await;
        assert!(!waiter.is_finished());
        drop(task);
        tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .expect("all_done resolves once both guards are gone")
            .unwrap();
    }
}
