//! Abuse reports and the moderation queue. Anyone may report a link; the
//! report is kept without the reporter's address. An admin resolves a
//! report by flagging the link (warning page), disabling it (410), or
//! dismissing the report; every other open report of the same link is
//! resolved with it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use shortline_store::LinkStatus;

use crate::db::{ReadTxn, Space, StoreError, StoreResult, Txn, prefix_end};
use crate::domain::links;
use crate::domain::{Error, Outcome};

/// Why a link is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Phishing,
    Malware,
    Spam,
    Other,
}

/// What resolving a report does to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The link answers with the warning page.
    Flag,
    /// The link answers 410.
    Disable,
    /// The link is left alone.
    Dismiss,
}

impl Action {
    /// What was done, as the API spells it in past tense for messages.
    #[must_use]
    pub fn done(self) -> &'static str {
        match self {
            Self::Flag => "flagged",
            Self::Disable => "disabled",
            Self::Dismiss => "dismissed",
        }
    }
}

/// Where a report is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportState {
    /// Waiting for an admin.
    Open,
    /// An admin resolved it (or another report of the same link).
    Resolved,
}

/// A report as stored and returned.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// Sorts by creation time.
    pub id: String,
    pub code: String,
    pub category: Category,
    pub comment: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub state: ReportState,
    pub action: Option<Action>,
    pub resolved_at: Option<String>,
    /// The name of the key that resolved it.
    pub resolved_by: Option<String>,
    /// The id of that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by_key_id: Option<String>,
}

impl Report {
    fn decode(bytes: &[u8]) -> StoreResult<Self> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("report: {e}")))
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a report always serialises")
    }
}

/// A new report id: milliseconds since the epoch and 32 random bits, in hex,
/// so ids sort by time. Within one process ids strictly increase, even for
/// reports filed in the same millisecond, so the queue lists them in the order
/// they were filed; the random bits keep ids from several hosts apart.
#[must_use]
pub fn new_id(now_ms: u64) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    // Half the random range leaves room to count up within a millisecond.
    let fresh = (now_ms << 32) | u64::from(rand::random::<u32>() >> 1);
    let last = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(fresh.max(last + 1))
        })
        .unwrap_or_else(|last| last);
    let id = fresh.max(last + 1);
    format!("{:012x}{:08x}", id >> 32, id & 0xffff_ffff)
}

/// Files a report on an existing link, unless the queue is full.
pub fn file(txn: &mut dyn Txn, report: &Report, open_max: u64) -> Outcome<()> {
    if txn.get(Space::Links, report.code.as_bytes())?.is_none() {
        return Ok(Err(Error::NotFound));
    }
    if open_count(txn)? >= open_max {
        metrics::counter!("control_reports_refused_total").increment(1);
        return Ok(Err(Error::Exhausted(
            "the moderation queue is full; try again later".into(),
        )));
    }
    txn.set(Space::Reports, report.id.as_bytes(), &report.encode())?;
    txn.set(
        Space::ReportsOpen,
        &crate::db::keys::pair(&report.code, &report.id),
        b"",
    )?;
    txn.add(Space::Counters, crate::db::keys::OPEN_REPORTS, 1)?;
    Ok(Ok(()))
}

fn open_count(txn: &mut dyn Txn) -> StoreResult<u64> {
    Ok(txn
        .get(Space::Counters, crate::db::keys::OPEN_REPORTS)?
        .and_then(|v| v.try_into().ok())
        .map_or(0, |b: [u8; 8]| i64::from_le_bytes(b).max(0) as u64))
}

/// Which reports to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Open,
    All,
}

/// Reports in id order (oldest first) after `after`, up to `limit`, with
/// the cursor of the next page.
pub fn list(
    txn: &dyn ReadTxn,
    filter: Filter,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<(Vec<Report>, Option<String>)> {
    let start = after.map_or_else(Vec::new, |a| {
        let mut s = a.as_bytes().to_vec();
        s.push(0);
        s
    });
    let mut out = Vec::with_capacity(limit);
    let mut from = start;
    loop {
        let page = txn.range(Space::Reports, &from, &[0xff], limit + 1)?;
        let done = page.len() <= limit;
        for (key, value) in &page {
            let report = Report::decode(value)?;
            if filter == Filter::Open && report.state != ReportState::Open {
                continue;
            }
            if out.len() == limit {
                let next = out.last().map(|r: &Report| r.id.clone());
                return Ok((out, next));
            }
            out.push(report);
            from.clone_from(key);
        }
        if done {
            return Ok((out, None));
        }
        let (last, _) = page.last().expect("a full page");
        from.clone_from(last);
        from.push(0);
    }
}

/// What resolving did.
#[derive(Debug)]
pub struct Resolved {
    pub report: Report,
    /// Reports resolved, this one included.
    pub reports: u64,
}

/// Resolves report `id` and every other open report of its link with
/// `action`, applying the action to the link.
pub fn resolve(
    txn: &mut dyn Txn,
    id: &str,
    action: Action,
    by: &crate::domain::auth::Principal,
    now: i64,
    now_text: &str,
) -> Outcome<Resolved> {
    let Some(bytes) = txn.get(Space::Reports, id.as_bytes())? else {
        return Ok(Err(Error::NotFound));
    };
    let report = Report::decode(&bytes)?;
    if report.state != ReportState::Open {
        return Ok(Err(Error::Conflict {
            field: "id".into(),
            reason: format!(
                "report {id} is already resolved ({})",
                report.action.unwrap_or(Action::Dismiss).done()
            ),
        }));
    }
    let code = report.code.clone();
    if action != Action::Dismiss && links::get(&*txn, &code)?.is_none() {
        return Ok(Err(Error::Conflict {
            field: "action".into(),
            reason: "the reported link was deleted; dismiss the report".into(),
        }));
    }
    match action {
        Action::Flag => {
            links::set_status(
                txn,
                &code,
                LinkStatus::Flagged,
                Some(crate::model::FlagReason::Report),
                now,
            )?;
        }
        Action::Disable => {
            links::set_status(txn, &code, LinkStatus::Disabled, None, now)?;
        }
        Action::Dismiss => {}
    }
    let (resolved, this) = close_open_reports(txn, &code, id, action, by, now_text)?;
    let report = this.ok_or_else(|| {
        StoreError::Corrupt(format!("open report {id} is missing from the open index"))
    })?;
    metrics::counter!("control_reports_resolved_total", "action" => format!("{action:?}").to_lowercase())
        .increment(resolved);
    Ok(Ok(Resolved {
        report,
        reports: resolved,
    }))
}

/// Resolves every open report of `code` with `action`: a link's reports
/// are resolved together. Returns how many, and the report `id` as
/// resolved.
fn close_open_reports(
    txn: &mut dyn Txn,
    code: &str,
    id: &str,
    action: Action,
    by: &crate::domain::auth::Principal,
    now_text: &str,
) -> StoreResult<(u64, Option<Report>)> {
    let prefix = crate::db::keys::pair(code, "");
    let open = txn.range(
        Space::ReportsOpen,
        &prefix,
        &prefix_end(&prefix),
        usize::MAX,
    )?;
    let mut resolved = 0u64;
    let mut this = None;
    for (key, _) in open {
        let other_id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        txn.clear(Space::ReportsOpen, &key)?;
        let Some(bytes) = txn.get(Space::Reports, other_id.as_bytes())? else {
            continue;
        };
        let mut other = Report::decode(&bytes)?;
        debug_assert_eq!(
            other.state,
            ReportState::Open,
            "the open index lists open reports"
        );
        other.state = ReportState::Resolved;
        other.action = Some(action);
        other.resolved_at = Some(now_text.to_owned());
        other.resolved_by = Some(by.key_name.clone());
        other.resolved_by_key_id = Some(by.key_id.clone());
        txn.set(Space::Reports, other_id.as_bytes(), &other.encode())?;
        resolved += 1;
        if other.id == id {
            this = Some(other);
        }
    }
    txn.add(
        Space::Counters,
        crate::db::keys::OPEN_REPORTS,
        -(resolved as i64),
    )?;
    Ok((resolved, this))
}

#[cfg(test)]
mod tests {
    use super::new_id;

    #[test]
    fn ids_filed_in_one_millisecond_keep_their_order() {
        let ids: Vec<String> = (0..10_000).map(|_| new_id(1_700_000_000_000)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids must increase");
        assert!(ids.iter().all(|id| id.len() == 20));
        // A later millisecond still sorts after everything before it.
        assert!(new_id(1_700_000_000_001) > ids[ids.len() - 1]);
    }
}
