//! Webhook subscriptions: who is told about which links, the queue of
//! events each has still to receive, and the log of its delivery attempts.
//!
//! An event is born in the transaction that changes the link: the link's
//! change in the change log carries it ([`link_event`]), logged only while a
//! subscription is enabled ([`keys::WEBHOOKS_ACTIVE`]). Counted clicks wait in
//! `WebhookClicks` ([`queue_clicks`]), written by the click flush that counts
//! them. The delivery task moves both into each matching subscription's
//! queue ([`enqueue`]) and delivers the queue in order; an event leaves a
//! queue only once delivered ([`record_attempts`]), so one acknowledged by
//! the store is never lost to a restart.

use shortline_store::LinkStatus;

use crate::db::{ReadTxn, Space, StoreResult, Txn, keys, prefix_end};
use crate::domain::auth::Principal;
use crate::domain::{Error, Outcome};
use crate::model::{AttemptDoc, EventKind, LinkDoc, LinkEvent, WebhookDoc};

/// Subscriptions one store holds at most.
pub const SUBSCRIPTIONS_MAX: usize = 1000;
/// Events one subscription may have waiting; past it, it is disabled.
pub const QUEUE_MAX: u64 = 1_000_000;
/// Attempts each subscription's log keeps.
pub const LOG_KEPT: u64 = 100;
/// Links in one `link.clicks` event at most.
pub const CLICKS_PER_EVENT: usize = 1000;

/// One click flush's counts: `(link id, clicks, human clicks)` per link.
pub type ClickCounts = Vec<(u64, u64, u64)>;

/// Whether link writes log their events now.
pub fn active(txn: &dyn ReadTxn) -> StoreResult<bool> {
    Ok(txn.get(Space::Meta, keys::WEBHOOKS_ACTIVE)?.is_some())
}

/// The event of writing `link` over `old`, when a subscription may want it.
pub fn link_event(
    txn: &dyn ReadTxn,
    link: &LinkDoc,
    old: Option<&LinkDoc>,
) -> StoreResult<Option<LinkEvent>> {
    if !active(txn)? {
        return Ok(None);
    }
    let kind = match old {
        None => EventKind::Created,
        Some(old) if link.status == LinkStatus::Flagged && old.status != LinkStatus::Flagged => {
            EventKind::Flagged
        }
        Some(_) => EventKind::Updated,
    };
    Ok(Some(LinkEvent {
        kind,
        link: Box::new(link.clone()),
    }))
}

/// The event of deleting `link`, when a subscription may want it.
pub fn deleted_event(txn: &dyn ReadTxn, link: &LinkDoc) -> StoreResult<Option<LinkEvent>> {
    Ok(active(txn)?.then(|| LinkEvent {
        kind: EventKind::Deleted,
        link: Box::new(link.clone()),
    }))
}

/// A new, enabled subscription with nothing queued yet.
#[must_use]
pub fn subscription(
    id: String,
    url: String,
    events: Vec<EventKind>,
    owner: Option<String>,
    created_by: String,
    created_at: i64,
) -> WebhookDoc {
    WebhookDoc {
        id,
        url,
        events,
        owner,
        created_by,
        created_at,
        secret: crate::domain::auth::new_secret("whsec_"),
        enabled: true,
        disabled_reason: None,
        queued: 0,
        delivered: 0,
        logged: 0,
        failing_since: None,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
    }
}

/// Whether `hook` wants an event of `kind` about a link owned by `owner`.
#[must_use]
pub fn wants(hook: &WebhookDoc, kind: EventKind, owner: &str) -> bool {
    hook.enabled && hook.events.contains(&kind) && hook.owner.as_deref().is_none_or(|o| o == owner)
}

/// Counted clicks per link (`(link id, clicks, human clicks)`), kept for the
/// subscriptions to `link.clicks` while any is enabled. `nonce` makes the
/// keys of flushes in the same millisecond (and other processes') differ.
pub fn queue_clicks(
    txn: &mut dyn Txn,
    now_ms: i64,
    nonce: u64,
    counts: &[(u64, u64, u64)],
) -> StoreResult<()> {
    if counts.is_empty() || !active(&*txn)? {
        return Ok(());
    }
    for (n, chunk) in counts.chunks(CLICKS_PER_EVENT).enumerate() {
        let mut key = Vec::with_capacity(24);
        key.extend_from_slice(&now_ms.to_be_bytes());
        key.extend_from_slice(&nonce.to_be_bytes());
        key.extend_from_slice(&(n as u64).to_be_bytes());
        let value = serde_json::to_vec(chunk).expect("numbers serialise");
        txn.set(Space::WebhookClicks, &key, &value)?;
    }
    Ok(())
}

/// Up to `limit` waiting click counts, oldest first, with their keys.
pub fn waiting_clicks(txn: &dyn ReadTxn, limit: usize) -> StoreResult<Vec<(Vec<u8>, ClickCounts)>> {
    txn.range(Space::WebhookClicks, &[], &[0xff], limit)?
        .into_iter()
        .map(|(key, value)| {
            let counts = serde_json::from_slice(&value).map_err(|e| {
                crate::db::StoreError::Corrupt(format!("webhook click counts: {e}"))
            })?;
            Ok((key, counts))
        })
        .collect()
}

/// One subscription.
pub fn get(txn: &dyn ReadTxn, id: &str) -> StoreResult<Option<WebhookDoc>> {
    txn.get(Space::Webhooks, id.as_bytes())?
        .map(|bytes| WebhookDoc::decode(&bytes))
        .transpose()
}

/// One subscription, if `principal` may see it: an admin every one, a user
/// those of their own links.
pub fn get_for(txn: &dyn ReadTxn, id: &str, principal: &Principal) -> Outcome<WebhookDoc> {
    Ok(match get(txn, id)? {
        Some(hook)
            if principal.is_admin() || hook.owner.as_deref() == Some(principal.owner.as_str()) =>
        {
            Ok(hook)
        }
        _ => Err(Error::NotFound),
    })
}

/// Every subscription, in id order.
pub fn list(txn: &dyn ReadTxn) -> StoreResult<Vec<WebhookDoc>> {
    txn.range(Space::Webhooks, &[], &[0xff], SUBSCRIPTIONS_MAX)?
        .iter()
        .map(|(_, v)| WebhookDoc::decode(v))
        .collect()
}

/// Stores `hook` and says whether events must be logged.
pub fn put(txn: &mut dyn Txn, hook: &WebhookDoc) -> StoreResult<()> {
    txn.set(Space::Webhooks, hook.id.as_bytes(), &hook.encode())?;
    refresh_active(txn)
}

/// Stores `hook` as the delivery task left it (events queued or recorded,
/// or disabled): the flag that makes writes log events is checked again
/// only when it is disabled, the one change here that can clear it.
pub fn store(txn: &mut dyn Txn, hook: &WebhookDoc) -> StoreResult<()> {
    txn.set(Space::Webhooks, hook.id.as_bytes(), &hook.encode())?;
    if !hook.enabled {
        refresh_active(txn)?;
    }
    Ok(())
}

/// Adds a subscription, unless the store holds its most already.
pub fn create(txn: &mut dyn Txn, hook: &WebhookDoc) -> Outcome<()> {
    if list(&*txn)?.len() >= SUBSCRIPTIONS_MAX {
        return Ok(Err(Error::conflict(
            "url",
            format!(
                "a store holds at most {SUBSCRIPTIONS_MAX} webhook subscriptions; delete one first"
            ),
        )));
    }
    put(txn, hook)?;
    Ok(Ok(()))
}

/// Removes a subscription with its queue and log. Returns whether it existed.
pub fn delete(txn: &mut dyn Txn, id: &str) -> StoreResult<bool> {
    let Some(hook) = get(&*txn, id)? else {
        return Ok(false);
    };
    txn.clear(Space::Webhooks, id.as_bytes())?;
    // Delivered events are gone already; the rest are numbered from the
    // number delivered on.
    for n in hook.delivered..hook.queued {
        txn.clear(Space::WebhookQueue, &keys::webhook_entry(id, n))?;
    }
    for n in hook.logged.saturating_sub(LOG_KEPT)..hook.logged {
        txn.clear(Space::WebhookLog, &keys::webhook_entry(id, n))?;
    }
    refresh_active(txn)?;
    Ok(true)
}

/// Sets or clears the flag that makes writes log events: set while any
/// subscription is enabled.
fn refresh_active(txn: &mut dyn Txn) -> StoreResult<()> {
    let any = list(&*txn)?.iter().any(|h| h.enabled);
    let was = active(&*txn)?;
    if any && !was {
        txn.set(Space::Meta, keys::WEBHOOKS_ACTIVE, b"1")?;
    } else if !any && was {
        txn.clear(Space::Meta, keys::WEBHOOKS_ACTIVE)?;
    }
    Ok(())
}

/// Puts `body` at the end of `hook`'s queue (the caller stores `hook`). A
/// queue at [`QUEUE_MAX`] disables its subscription instead.
pub fn enqueue(txn: &mut dyn Txn, hook: &mut WebhookDoc, body: &[u8]) -> StoreResult<()> {
    if !hook.enabled {
        return Ok(());
    }
    if hook.queued - hook.delivered >= QUEUE_MAX {
        hook.enabled = false;
        hook.disabled_reason = Some(format!(
            "{QUEUE_MAX} events were waiting; deliveries are failing: {}",
            hook.last_error.as_deref().unwrap_or("no error recorded")
        ));
        return Ok(());
    }
    txn.set(
        Space::WebhookQueue,
        &keys::webhook_entry(&hook.id, hook.queued),
        body,
    )?;
    hook.queued += 1;
    Ok(())
}

/// Up to `limit` of the oldest events waiting for `id`: their numbers and
/// bodies, in order.
pub fn waiting(txn: &dyn ReadTxn, id: &str, limit: usize) -> StoreResult<Vec<(u64, Vec<u8>)>> {
    let start = keys::webhook_entry(id, 0);
    let mut prefix = id.as_bytes().to_vec();
    prefix.push(0);
    let found = txn.range(Space::WebhookQueue, &start, &prefix_end(&prefix), limit)?;
    Ok(found
        .into_iter()
        .map(|(key, body)| {
            let n = u64::from_be_bytes(key[key.len() - 8..].try_into().expect("8 bytes"));
            (n, body)
        })
        .collect())
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub number: u64,
    pub attempt: AttemptDoc,
    pub delivered: bool,
    /// When the head is tried again, if it failed (Unix ms).
    pub retry_at: i64,
    /// The subscription has failed for the whole retry window.
    pub give_up: bool,
}

/// Records attempts at `id`'s events, in the order they were made: each
/// is logged, and either drops its event (delivered) or schedules its
/// retry, disabling the subscription once `give_up`. One transaction for a
/// run of deliveries. Returns the subscription as it now is, or `None` when
/// it was deleted meanwhile. An attempt whose event is no longer queued
/// (delivered by another process meanwhile) ends the run.
pub fn record_attempts(
    txn: &mut dyn Txn,
    id: &str,
    outcomes: &[Attempted],
) -> StoreResult<Option<WebhookDoc>> {
    let Some(mut hook) = get(&*txn, id)? else {
        return Ok(None);
    };
    for outcome in outcomes {
        if !record_one(txn, &mut hook, outcome)? {
            break;
        }
    }
    store(txn, &hook)?;
    Ok(Some(hook))
}

/// Records one attempt on `hook` (the caller stores it); false when its
/// event is no longer queued.
fn record_one(txn: &mut dyn Txn, hook: &mut WebhookDoc, outcome: &Attempted) -> StoreResult<bool> {
    let key = keys::webhook_entry(&hook.id, outcome.number);
    if txn.get(Space::WebhookQueue, &key)?.is_none() {
        return Ok(false);
    }
    let attempt = &outcome.attempt;
    txn.set(
        Space::WebhookLog,
        &keys::webhook_entry(&hook.id, hook.logged),
        &serde_json::to_vec(attempt).expect("an attempt serialises"),
    )?;
    if hook.logged >= LOG_KEPT {
        txn.clear(
            Space::WebhookLog,
            &keys::webhook_entry(&hook.id, hook.logged - LOG_KEPT),
        )?;
    }
    hook.logged += 1;
    if outcome.delivered {
        txn.clear(Space::WebhookQueue, &key)?;
        hook.delivered += 1;
        hook.attempts = 0;
        hook.failing_since = None;
        hook.next_attempt_at = 0;
    } else {
        let error = attempt.error.clone().unwrap_or_default();
        hook.attempts += 1;
        hook.failing_since.get_or_insert(attempt.at);
        hook.next_attempt_at = outcome.retry_at;
        if outcome.give_up {
            hook.enabled = false;
            hook.disabled_reason = Some(format!(
                "every delivery failed for the whole retry window, {} attempts since {}; the last: {error}",
                hook.attempts,
                crate::model::rfc3339_ms(hook.failing_since.unwrap_or(attempt.at)),
            ));
        }
        hook.last_error = Some(error);
    }
    Ok(true)
}

/// The attempts `id`'s log keeps, newest first.
pub fn attempts(txn: &dyn ReadTxn, hook: &WebhookDoc) -> StoreResult<Vec<AttemptDoc>> {
    let start = keys::webhook_entry(&hook.id, hook.logged.saturating_sub(LOG_KEPT));
    let end = keys::webhook_entry(&hook.id, hook.logged);
    let mut out = txn
        .range(Space::WebhookLog, &start, &end, LOG_KEPT as usize)?
        .iter()
        .map(|(_, v)| {
            serde_json::from_slice(v)
                .map_err(|e| crate::db::StoreError::Corrupt(format!("webhook attempt: {e}")))
        })
        .collect::<StoreResult<Vec<AttemptDoc>>>()?;
    out.reverse();
    Ok(out)
}

/// Turns a subscription back on after it was disabled: the failure state is
/// forgotten and its queue, kept meanwhile, is tried at once.
pub fn enable(hook: &mut WebhookDoc) {
    hook.enabled = true;
    hook.disabled_reason = None;
    hook.failing_since = None;
    hook.attempts = 0;
    hook.next_attempt_at = 0;
}

/// Why `ip` is no place for a webhook to reach unless private targets are
/// allowed (a server-side request forgery guard), or `None` for a public
/// address.
#[must_use]
pub fn non_public(ip: std::net::IpAddr) -> Option<&'static str> {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_broadcast() || v4.is_multicast() || a >= 240 {
                Some("broadcast, multicast or reserved")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else if v4.is_documentation() || (a == 198 && (b == 18 || b == 19)) {
                Some("documentation or benchmarking")
            } else if a == 192 && b == 0 && v4.octets()[2] == 0 {
                Some("IETF protocol assignments")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique local (private)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., c, d] = v6.segments();
                non_public(IpAddr::V4(std::net::Ipv4Addr::from(
                    (u32::from(c) << 16) | u32::from(d),
                )))
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for (ip, public) in [
            ("93.184.215.14", true),
            ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("::1", false),
            ("::", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::a00:1", false),
            ("2001:db8::1", false),
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(non_public(ip).is_none(), public, "{ip}");
        }
    }

    fn hook() -> WebhookDoc {
        subscription(
            "wh_1".into(),
            "https://hooks.example/in".into(),
            vec![EventKind::Created, EventKind::Clicks],
            Some("ann".into()),
            "ann".into(),
            0,
        )
    }

    #[test]
    fn a_subscription_hears_only_its_events_about_its_owners_links() {
        let mut hook = hook();
        assert!(wants(&hook, EventKind::Created, "ann"));
        assert!(!wants(&hook, EventKind::Created, "bob"));
        assert!(!wants(&hook, EventKind::Deleted, "ann"));
        hook.owner = None;
        assert!(wants(&hook, EventKind::Clicks, "bob"));
        hook.enabled = false;
        assert!(!wants(&hook, EventKind::Clicks, "bob"));
    }
}
