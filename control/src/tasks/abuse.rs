//! The abuse walks that span many transactions: indexing hosts once, a
//! blocklist entry's sweep over its domain, and re-checking every link
//! when the threat list changes. The rules they apply live in
//! [`crate::domain::blocklist`] and [`crate::domain::threats`].

use std::sync::Arc;

use shortline_store::{Code, LinkStatus};

use crate::commit::CommitError;
use crate::db::{Space, StoreResult};
use crate::domain::{blocklist, links, threats};
use crate::model::{LinkDoc, now_unix};
use crate::state::AppState;

/// Links read per page when the whole table is walked.
const WALK_PAGE: usize = 1000;

/// Gives links stored before the host index existed their entries, a page
/// per transaction, once.
pub fn index_hosts_once(backend: &dyn crate::db::Backend) -> StoreResult<()> {
    let mut done = false;
    backend.read(|txn| {
        done = txn
            .get(Space::Meta, crate::db::keys::HOSTS_INDEXED)?
            .is_some();
        Ok(())
    })?;
    let mut after: Vec<u8> = Vec::new();
    while !done {
        let mut next = None;
        backend.write(&mut |txn| {
            next = links::index_hosts(txn, &after, WALK_PAGE)?;
            if next.is_none() {
                txn.set(Space::Meta, crate::db::keys::HOSTS_INDEXED, b"1")?;
            }
            Ok(())
        })?;
        match next {
            Some(last) => after = last,
            None => done = true,
        }
    }
    Ok(())
}

/// Runs the stored sweep of the entry for `domain` to its end, a page per
/// transaction, from wherever it stands. Returns it as it ended (`None`
/// when none was ever started).
pub async fn run_sweep(
    state: &Arc<AppState>,
    domain: &str,
) -> Result<Option<blocklist::Sweep>, CommitError> {
    loop {
        let page_domain = domain.to_owned();
        let now = now_unix();
        let sweep = state
            .committer
            .write(move |txn| blocklist::sweep_page(txn, &page_domain, now))
            .await?;
        let Some((sweep, changed)) = sweep else {
            return Ok(None);
        };
        let what = if sweep.block { "flagged" } else { "unflagged" };
        metrics::counter!("control_blocklist_links_total", "change" => what).increment(changed);
        if sweep.done {
            tracing::info!(%domain, changed = sweep.changed, what, "blocklist sweep done");
            return Ok(Some(sweep));
        }
    }
}

/// Finishes the sweeps a crash cut short, one after another. Runs once at
/// start-up; a sweep that fails is logged and left for the next start.
pub async fn resume_sweeps(state: Arc<AppState>) {
    let backend = Arc::clone(&state.backend);
    let pending = tokio::task::spawn_blocking(move || {
        backend.read(|txn| blocklist::pending_sweeps(txn, usize::MAX))
    })
    .await;
    let pending = match pending {
        Ok(Ok(pending)) => pending,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot list unfinished blocklist sweeps");
            return;
        }
        Err(_) => return,
    };
    for domain in pending {
        tracing::info!(%domain, "resuming a blocklist sweep cut short");
        if let Err(e) = run_sweep(&state, &domain).await {
            tracing::warn!(%domain, error = %e, "blocklist sweep failed; it resumes at the next start");
        }
    }
}

/// Re-checks every stored link against the threat list in force: flags the
/// links it matches, lifts the threat-list flags of links it no longer
/// matches, a page per transaction with how far it got. A re-check cut short
/// resumes from its last page; one that finished against the same list is
/// not run again (links written since were checked as they were written).
/// Returns (flagged, unflagged) over the whole re-check.
pub async fn recheck_threats(state: &Arc<AppState>) -> anyhow::Result<(u64, u64)> {
    let list = state.threats.current();
    let backend = Arc::clone(&state.backend);
    let stored =
        tokio::task::spawn_blocking(move || backend.read(|txn| threats::Recheck::stored(txn)))
            .await??;
    let mut progress = match stored {
        Some(stored) if stored.digest == list.digest() => stored,
        _ => threats::Recheck::start(&list),
    };
    if progress.done {
        metrics::counter!("control_threat_list_rechecks_total", "outcome" => "unchanged")
            .increment(1);
        tracing::info!(
            prefixes = list.len(),
            "stored links were re-checked against this threat list before"
        );
        return Ok((progress.flagged, progress.unflagged));
    }
    if progress.after.is_some() {
        tracing::info!(after = ?progress.after, "resuming the threat list re-check");
    }
    loop {
        let backend = Arc::clone(&state.backend);
        let from = progress.after.clone();
        let page: Vec<LinkDoc> = tokio::task::spawn_blocking(move || {
            backend.read(|txn| {
                let mut start = from.clone().map(String::into_bytes).unwrap_or_default();
                if !start.is_empty() {
                    start.push(0);
                }
                txn.range(Space::Links, &start, &[0xff], WALK_PAGE)?
                    .iter()
                    .map(|(_, v)| LinkDoc::decode(v))
                    .collect::<StoreResult<_>>()
            })
        })
        .await??;
        let changes: Vec<Code> = page
            .iter()
            .filter(|link| {
                let hit = list.matching(&link.url).is_some();
                let threat_flagged = link.status == LinkStatus::Flagged
                    && link.flag_reason == Some(threats::FLAG_REASON);
                (hit && link.status == LinkStatus::Active) || (!hit && threat_flagged)
            })
            .map(|link| link.code.clone())
            .collect();
        let mut next = progress.clone();
        next.done = page.len() < WALK_PAGE;
        if let Some(last) = page.last() {
            next.after = Some(last.code.as_str().to_owned());
        }
        let list = Arc::clone(&list);
        let now = now_unix();
        let before = (progress.flagged, progress.unflagged);
        progress = state
            .committer
            .write(move |txn| {
                let mut next = next.clone();
                for code in &changes {
                    // Decide again on the link as it is now.
                    let Some(link) = links::get(&*txn, code)? else {
                        continue;
                    };
                    if list.matching(&link.url).is_some() {
                        next.flagged +=
                            u64::from(links::flag(txn, code, &threats::FLAG_REASON, now)?);
                    } else {
                        next.unflagged +=
                            u64::from(links::unflag(txn, code, &threats::FLAG_REASON, now)?);
                    }
                }
                next.store(txn)?;
                Ok(next)
            })
            .await?;
        metrics::counter!("control_threat_list_links_total", "change" => "flagged")
            .increment(progress.flagged - before.0);
        metrics::counter!("control_threat_list_links_total", "change" => "unflagged")
            .increment(progress.unflagged - before.1);
        if progress.done {
            break;
        }
    }
    metrics::counter!("control_threat_list_rechecks_total", "outcome" => "finished").increment(1);
    tracing::info!(
        flagged = progress.flagged,
        unflagged = progress.unflagged,
        prefixes = list.len(),
        "stored links re-checked against the threat list"
    );
    Ok((progress.flagged, progress.unflagged))
}

/// Watches the threat list file: on start and after every change, stored
/// links are re-checked.
pub async fn watch_threats(state: Arc<AppState>) {
    if !state.threats.configured() {
        return;
    }
    let mut recheck = true;
    let mut shutdown = state.shutdown.subscribe();
    loop {
        if recheck {
            match recheck_threats(&state).await {
                Ok(_) => recheck = false,
                Err(e) => tracing::warn!(error = %e, "threat re-check failed; retrying"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(threats::poll_interval(&state.config)) => {}
            _ = shutdown.changed() => return,
        }
        let threats = Arc::clone(&state.threats);
        if tokio::task::spawn_blocking(move || threats.reload_if_changed())
            .await
            .unwrap_or(false)
        {
            recheck = true;
        }
    }
}
