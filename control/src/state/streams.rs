//! How far each change-stream subscriber (a proxy) has been sent, so a write
//! whose effect a proxy must show before anything else happens (an ACME
//! challenge's answer) can wait until the proxies were handed it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shortline_store::Seq;

/// How often [`Streams::wait_sent`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// The change-stream subscribers and the newest sequence each was sent.
#[derive(Debug, Default)]
pub struct Streams {
    next_id: AtomicU64,
    sent: Mutex<HashMap<u64, Seq>>,
}

impl Streams {
    fn sent_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Seq>> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new subscriber, which has everything through `at`.
    pub fn join(&self, at: Seq) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.sent_map().insert(id, at);
        id
    }

    /// Subscriber `id` was sent everything through `seq`.
    pub fn sent(&self, id: u64, seq: Seq) {
        if let Some(sent) = self.sent_map().get_mut(&id) {
            *sent = (*sent).max(seq);
        }
    }

    pub fn leave(&self, id: u64) {
        self.sent_map().remove(&id);
    }

    /// Waits until every subscriber was sent `seq` or later, for at most
    /// `longest`. False when the time ran out first, or nobody subscribes.
    pub async fn wait_sent(&self, seq: Seq, longest: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + longest;
        loop {
            {
                let sent = self.sent_map();
                if !sent.is_empty() && sent.values().all(|s| *s >= seq) {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_once_every_subscriber_was_sent_the_sequence() {
        let streams = Streams::default();
        assert!(
            !streams.wait_sent(Seq(1), Duration::ZERO).await,
            "nobody subscribes"
        );
        let a = streams.join(Seq(5));
        let b = streams.join(Seq(3));
        assert!(streams.wait_sent(Seq(3), Duration::ZERO).await);
        assert!(
            !streams.wait_sent(Seq(5), Duration::ZERO).await,
            "b is behind"
        );
        streams.sent(b, Seq(7));
        streams.sent(b, Seq(6));
        assert!(streams.wait_sent(Seq(5), Duration::ZERO).await);
        streams.leave(a);
        assert!(streams.wait_sent(Seq(7), Duration::ZERO).await);
    }
}
