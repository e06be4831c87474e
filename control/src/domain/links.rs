//! Link operations inside one store transaction. Each checks every
//! precondition before it writes, so a refused request leaves nothing behind
//! in a transaction it shares with others (group commit).

use shortline_store::routing::{Routing, Rule, Variant};
use shortline_store::{Code, LinkId, LinkStatus, PreviousTarget, RedirectStatus, Target};

use crate::db::keys;
use crate::db::{Pairs, ReadTxn, Space, StoreResult, Txn, prefix_end};
use crate::domain::auth::Principal;
use crate::domain::codes::{self, Permutation};
use crate::domain::domains::{self, DomainDoc};
use crate::domain::threats::ThreatList;
use crate::domain::webhooks;
use crate::domain::{Error, Outcome};
use crate::model::Strategy;
use crate::model::{ChangeDoc, FlagReason, HistoryDoc, LinkDoc, PREVIOUS_TARGETS_KEPT};

/// Collisions tolerated at one length before random codes get longer.
const RANDOM_TRIES_PER_LENGTH: usize = 3;
/// Salts tried before hash codes get longer.
const HASH_SALTS_PER_LENGTH: u32 = 4;
/// Lengths tried beyond the configured one before giving up.
const EXTRA_LENGTHS_MAX: usize = 4;

/// The owner of links created without a key (`anonymous_create`).
pub const ANONYMOUS_OWNER: &str = "anonymous";

/// How the code of a new link is chosen.
#[derive(Debug, Clone)]
pub enum CodePlan {
    Alias(Code),
    Generated { strategy: Strategy, length: usize },
}

/// A validated create request, ready to run in a transaction.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub id: LinkId,
    pub code: CodePlan,
    /// The short domain (normalised name); `None` for the default.
    pub domain: Option<String>,
    pub url: Target,
    pub owner: String,
    pub now: i64,
    pub expires_at: Option<i64>,
    pub max_clicks: Option<u64>,
    pub redirect: RedirectStatus,
    pub forward_query: bool,
    pub tags: Vec<String>,
    pub title: Option<String>,
    /// Only an admin may change the target once it is set.
    pub target_locked: bool,
    /// Targeting rules and a split, each target checked already; `None`
    /// without either.
    pub routing: Option<Box<Routing>>,
}

/// What a create did.
#[derive(Debug, Clone)]
pub struct Created {
    pub link: LinkDoc,
    /// False when the hash strategy found the same link already there.
    pub created: bool,
}

fn code_free(txn: &mut dyn Txn, code: &str) -> StoreResult<bool> {
    Ok(txn.get(Space::Links, code.as_bytes())?.is_none()
        && txn.get(Space::Retired, code.as_bytes())?.is_none())
}

/// Claims a code and writes the link, or says why not.
pub fn create(txn: &mut dyn Txn, new: &NewLink, permutation: &Permutation) -> Outcome<Created> {
    let domain = match domains::resolve(txn, new.domain.as_deref())? {
        Ok(domain) => domain,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if let Some(refusal) = blocklist_refusal(txn, &new.url)? {
        return Ok(Err(refusal));
    }
    if let Some(refusal) = routing_refusal(txn, new.routing.as_deref())? {
        return Ok(Err(refusal));
    }
    let code = match &new.code {
        CodePlan::Alias(alias) => {
            let key = domain.key(alias);
            if txn.get(Space::Links, key.as_bytes())?.is_some() {
                return Ok(Err(alias_taken(alias)));
            }
            if txn.get(Space::Retired, key.as_bytes())?.is_some() {
                return Ok(Err(Error::Conflict {
                    field: "alias".into(),
                    reason: format!(
                        "alias {alias:?} was used before and is never handed out again"
                    ),
                }));
            }
            key
        }
        CodePlan::Generated { strategy, length } => {
            match generate(txn, new, &domain, *strategy, *length, permutation)? {
                Generated::Fresh(code) => code,
                Generated::Existing(link) => {
                    return Ok(Ok(Created {
                        link: *link,
                        created: false,
                    }));
                }
                Generated::Exhausted => {
                    return Ok(Err(Error::Exhausted(
                        "could not find a free code; retry or use a longer code_length".into(),
                    )));
                }
            }
        }
    };
    let link = new_doc(new, code);
    write_link(txn, &link, None)?;
    Ok(Ok(Created {
        link,
        created: true,
    }))
}

/// The refusal of an alias another link has.
#[must_use]
pub fn alias_taken(alias: &Code) -> Error {
    Error::Conflict {
        field: "alias".into(),
        reason: format!("alias {alias:?} is taken"),
    }
}

impl NewLink {
    /// The create a planned link ([`plan_load`]) came from, with `code`.
    #[must_use]
    pub fn from_doc(doc: LinkDoc, code: CodePlan) -> Self {
        Self {
            id: doc.id,
            code,
            domain: domains::split_key(&doc.code).0.map(str::to_owned),
            url: doc.url,
            owner: doc.owner,
            now: doc.created_at,
            expires_at: doc.expires_at,
            max_clicks: doc.max_clicks,
            redirect: doc.redirect,
            forward_query: doc.forward_query,
            tags: doc.tags,
            title: doc.title,
            target_locked: doc.target_locked,
            routing: doc.routing,
        }
    }
}

/// The link a create writes, with its code chosen.
fn new_doc(new: &NewLink, code: Code) -> LinkDoc {
    LinkDoc {
        id: new.id,
        code,
        url: new.url.clone(),
        owner: new.owner.clone(),
        created_at: new.now,
        updated_at: new.now,
        expires_at: new.expires_at,
        max_clicks: new.max_clicks,
        redirect: new.redirect,
        status: LinkStatus::Active,
        forward_query: new.forward_query,
        tags: new.tags.clone(),
        title: new.title.clone(),
        flag_reason: None,
        target_locked: new.target_locked,
        routing: new.routing.clone(),
        target_changes: 0,
        target_changed_at: None,
        previous_targets: Vec::new(),
    }
}

/// A link planned for a bulk load ([`crate::db::Backend::load`]).
#[derive(Debug)]
pub enum Loaded {
    /// The link, to be written with its [`index_entries`] unless another
    /// row of the load claims its code first.
    Link(LinkDoc),
    Refused(Error),
    /// Its generated code was used before: [`create`] makes it, in a
    /// transaction, once the load's links are in.
    Later,
}

/// Plans a link for a bulk load into a store that holds no links: what
/// [`create`] would write, checked against the blocklist and the retired
/// codes. The load compares its links' codes with each other, in code
/// order: the first row with a code takes it. A generated code is the
/// strategy's first choice (a counter code is unique by construction).
pub fn plan_load(
    txn: &dyn ReadTxn,
    new: &NewLink,
    permutation: &Permutation,
) -> StoreResult<Loaded> {
    let domain = match domains::resolve(txn, new.domain.as_deref())? {
        Ok(domain) => domain,
        Err(refusal) => return Ok(Loaded::Refused(refusal)),
    };
    if let Some(refusal) = blocklist_refusal(txn, &new.url)? {
        return Ok(Loaded::Refused(refusal));
    }
    let code = match &new.code {
        CodePlan::Alias(alias) => {
            let key = domain.key(alias);
            if txn.get(Space::Retired, key.as_bytes())?.is_some() {
                return Ok(Loaded::Refused(Error::Conflict {
                    field: "alias".into(),
                    reason: format!(
                        "alias {alias:?} was used before and is never handed out again"
                    ),
                }));
            }
            key
        }
        CodePlan::Generated { strategy, length } => {
            let code = match strategy {
                Strategy::Counter => permutation.code_for_id(new.id.0, *length),
                Strategy::Random => codes::random_code(*length),
                Strategy::Hash => codes::hash_code(&new.owner, &new.url, 0, *length),
                Strategy::Uuid => codes::uuid_code(),
            };
            let key = domain.key(&generated(code));
            if txn.get(Space::Retired, key.as_bytes())?.is_some() {
                return Ok(Loaded::Later);
            }
            key
        }
    };
    Ok(Loaded::Link(new_doc(new, code)))
}

enum Generated {
    Fresh(Code),
    Existing(Box<LinkDoc>),
    Exhausted,
}

fn generate(
    txn: &mut dyn Txn,
    new: &NewLink,
    domain: &DomainDoc,
    strategy: Strategy,
    length: usize,
    permutation: &Permutation,
) -> StoreResult<Generated> {
    match strategy {
        Strategy::Counter => {
            // Unique by construction; the check guards against an alias or
            // random code that happens to equal this id's code.
            let code = permutation.code_for_id(new.id.0, length);
            let key = domain.key(&generated(code));
            if code_free(txn, &key)? {
                return Ok(Generated::Fresh(key));
            }
            for extra in 1..=EXTRA_LENGTHS_MAX {
                let code = permutation.code_for_id(new.id.0, length + extra);
                let key = domain.key(&generated(code));
                if code_free(txn, &key)? {
                    return Ok(Generated::Fresh(key));
                }
            }
        }
        Strategy::Random => {
            for extra in 0..=EXTRA_LENGTHS_MAX {
                for _ in 0..RANDOM_TRIES_PER_LENGTH {
                    let code = codes::random_code(length + extra);
                    let key = domain.key(&generated(code));
                    if code_free(txn, &key)? {
                        return Ok(Generated::Fresh(key));
                    }
                    metrics::counter!("control_code_collisions_total", "strategy" => "random")
                        .increment(1);
                }
            }
        }
        Strategy::Hash => {
            for extra in 0..=EXTRA_LENGTHS_MAX {
                for salt in 0..HASH_SALTS_PER_LENGTH {
                    let code = codes::hash_code(&new.owner, &new.url, salt, length + extra);
                    let key = domain.key(&generated(code));
                    match txn.get(Space::Links, key.as_bytes())? {
                        Some(bytes) => {
                            let existing = LinkDoc::decode(&bytes)?;
                            if existing.owner == new.owner && existing.url == new.url {
                                return Ok(Generated::Existing(Box::new(existing)));
                            }
                        }
                        None if txn.get(Space::Retired, key.as_bytes())?.is_none() => {
                            return Ok(Generated::Fresh(key));
                        }
                        None => {}
                    }
                    metrics::counter!("control_code_collisions_total", "strategy" => "hash")
                        .increment(1);
                }
            }
        }
        Strategy::Uuid => {
            for _ in 0..RANDOM_TRIES_PER_LENGTH {
                let code = codes::uuid_code();
                let key = domain.key(&generated(code));
                if code_free(txn, &key)? {
                    return Ok(Generated::Fresh(key));
                }
            }
        }
    }
    Ok(Generated::Exhausted)
}

/// A code a strategy made: always in the code alphabet and within length.
fn generated(code: String) -> Code {
    Code::parse(&code).expect("generated codes use the code alphabet")
}

/// The host of a stored (normalised) target, without a trailing dot.
#[must_use]
pub fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .host_str()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
}

fn host_index_key(url: &str, code: &str) -> Option<Vec<u8>> {
    Some(keys::host(&host_of(url)?, code))
}

/// The blocklist entry that covers `host` (the host itself or a parent
/// domain), if any.
pub fn blocked_by(txn: &dyn ReadTxn, host: &str) -> StoreResult<Option<String>> {
    let host = host.trim_end_matches('.');
    let mut rest = host;
    loop {
        if txn.get(Space::Blocklist, rest.as_bytes())?.is_some() {
            return Ok(Some(rest.to_owned()));
        }
        match rest.split_once('.') {
            Some((_, parent)) if !parent.is_empty() => rest = parent,
            _ => return Ok(None),
        }
    }
}

/// The refusal of a target whose domain is on the blocklist, or that is a
/// short link itself (on any of the short domains), which could loop.
fn blocklist_refusal(txn: &dyn ReadTxn, url: &str) -> StoreResult<Option<Error>> {
    let Some(host) = host_of(url) else {
        return Ok(None);
    };
    if domains::is_short_domain(txn, &host)? {
        return Ok(Some(Error::invalid(
            "url",
            format!("{host} is a short domain here; a link to a short link could loop"),
        )));
    }
    Ok(blocked_by(txn, &host)?
        .map(|domain| Error::invalid("url", format!("domain {domain} is blocked"))))
}

/// The refusal of the first rule or variant whose target the blocklist
/// refuses, or that is a short domain here.
fn routing_refusal(txn: &dyn ReadTxn, routing: Option<&Routing>) -> StoreResult<Option<Error>> {
    let Some(routing) = routing else {
        return Ok(None);
    };
    let rules = routing
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| ("rule", i, &r.target));
    let variants = routing
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| ("variant", i, &v.target));
    for (what, i, target) in rules.chain(variants) {
        if let Some(Error::Invalid { reason, .. }) = blocklist_refusal(txn, target.as_str())? {
            return Ok(Some(Error::invalid(
                format!("{what}s"),
                format!("{what} {}: url: {reason}", i + 1),
            )));
        }
    }
    Ok(None)
}

/// Flags an active link, saying why. Returns whether it changed; a link
/// flagged already keeps its first reason, and a disabled, expired or
/// exhausted one (which the proxy does not redirect) is left alone: it can
/// only become active again through [`patch`], which checks its target.
pub fn flag(txn: &mut dyn Txn, code: &str, reason: &FlagReason, now: i64) -> StoreResult<bool> {
    let Some(old) = get(&*txn, code)? else {
        return Ok(false);
    };
    if old.status != LinkStatus::Active {
        return Ok(false);
    }
    let mut link = old.clone();
    link.status = LinkStatus::Flagged;
    link.flag_reason = Some(reason.clone());
    link.updated_at = now;
    write_link(txn, &link, Some(&old))?;
    Ok(true)
}

/// Lifts a flag set for `reason` (and only for it). Returns whether it did.
pub fn unflag(txn: &mut dyn Txn, code: &str, reason: &FlagReason, now: i64) -> StoreResult<bool> {
    let Some(old) = get(&*txn, code)? else {
        return Ok(false);
    };
    if old.status != LinkStatus::Flagged || old.flag_reason.as_ref() != Some(reason) {
        return Ok(false);
    }
    let mut link = old.clone();
    link.status = LinkStatus::Active;
    link.flag_reason = None;
    link.updated_at = now;
    write_link(txn, &link, Some(&old))?;
    Ok(true)
}

/// Sets a link's status outright (moderation). A `flagged` status carries
/// its reason; any other clears it.
pub fn set_status(
    txn: &mut dyn Txn,
    code: &str,
    status: LinkStatus,
    reason: Option<FlagReason>,
    now: i64,
) -> StoreResult<Option<LinkDoc>> {
    debug_assert_eq!(
        status == LinkStatus::Flagged,
        reason.is_some(),
        "a flag has a reason, and only a flag"
    );
    let Some(old) = get(&*txn, code)? else {
        return Ok(None);
    };
    let mut link = old.clone();
    link.status = status;
    link.flag_reason = reason.filter(|_| status == LinkStatus::Flagged);
    link.updated_at = now;
    write_link(txn, &link, Some(&old))?;
    Ok(Some(link))
}

/// Writes the host index entries of links stored before the index existed,
/// `limit` links from `after` on. Returns the last code done, or `None`
/// when every link is indexed.
pub fn index_hosts(txn: &mut dyn Txn, after: &[u8], limit: usize) -> StoreResult<Option<Vec<u8>>> {
    let mut start = after.to_vec();
    if !start.is_empty() {
        start.push(0);
    }
    let page = txn.range(Space::Links, &start, &[0xff], limit)?;
    for (_, value) in &page {
        let link = LinkDoc::decode(value)?;
        if let Some(key) = host_index_key(&link.url, &link.code) {
            txn.set(Space::ByHost, &key, b"")?;
        }
    }
    Ok((page.len() == limit).then(|| page.last().expect("a full page").0.clone()))
}

/// Up to `limit` codes of links to `domain` or its subdomains, after the
/// index key `after`; with the last index key seen.
pub fn codes_under(
    txn: &mut dyn Txn,
    domain: &str,
    after: Option<&[u8]>,
    limit: usize,
) -> StoreResult<(Vec<String>, Option<Vec<u8>>)> {
    let prefix = keys::reversed_host(domain);
    let start = match after {
        Some(key) => {
            let mut start = key.to_vec();
            start.push(0);
            start
        }
        None => prefix.clone(),
    };
    let page = txn.range(Space::ByHost, &start, &prefix_end(&prefix), limit)?;
    let codes = page
        .iter()
        .filter_map(|(key, _)| {
            let at = key.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&key[at + 1..]).into_owned())
        })
        .collect();
    let last = (page.len() == limit).then(|| page.last().expect("a full page").0.clone());
    Ok((codes, last))
}

/// Writes `link` with its indexes and logs the change; `old` is the version
/// it replaces, whose index entries are removed.
fn write_link(txn: &mut dyn Txn, link: &LinkDoc, old: Option<&LinkDoc>) -> StoreResult<()> {
    debug_assert!(
        old.is_none_or(|old| old.code == link.code && old.id == link.id && old.owner == link.owner),
        "a link keeps its code, id and owner for life"
    );
    if let Some(old) = old
        && old.url != link.url
        && let Some(key) = host_index_key(&old.url, &old.code)
    {
        txn.clear(Space::ByHost, &key)?;
    }
    if let Some(old) = old {
        for tag in &old.tags {
            txn.clear(Space::ByTag, &keys::pair(tag, &old.code))?;
        }
        if let Some(at) = old.expires_at {
            txn.clear(Space::ByExpiry, &keys::expiry(at, &old.code))?;
        }
        if old.max_clicks.is_some() && old.status == LinkStatus::Active {
            txn.clear(Space::Limited, &keys::link_id(link.id.0))?;
        }
    }
    txn.set(Space::Links, link.code.as_bytes(), &link.encode())?;
    for (space, key, value) in index_entries(link, old.is_none()) {
        txn.set(space, &key, &value)?;
    }
    let change = ChangeDoc {
        code: link.code.clone(),
        record: Some(link.record()),
        event: webhooks::link_event(&*txn, link, old)?,
    };
    txn.log_change(&change.encode())
}

/// The index entries of a link, as `(space, key, value)`; `new` adds its
/// id's entry, written once for life.
#[must_use]
pub fn index_entries(link: &LinkDoc, new: bool) -> Vec<(Space, Vec<u8>, Vec<u8>)> {
    let mut entries = Vec::with_capacity(4 + link.tags.len());
    let code = link.code.as_bytes();
    if let Some(key) = host_index_key(&link.url, &link.code) {
        entries.push((Space::ByHost, key, Vec::new()));
    }
    let id = keys::link_id(link.id.0);
    if new {
        entries.push((Space::ById, id.to_vec(), code.to_vec()));
    }
    if link.max_clicks.is_some() && link.status == LinkStatus::Active {
        entries.push((Space::Limited, id.to_vec(), code.to_vec()));
    }
    entries.push((
        Space::ByOwner,
        keys::pair(&link.owner, &link.code),
        Vec::new(),
    ));
    for tag in &link.tags {
        entries.push((Space::ByTag, keys::pair(tag, &link.code), Vec::new()));
    }
    if let (Some(at), LinkStatus::Active) = (link.expires_at, link.status) {
        entries.push((Space::ByExpiry, keys::expiry(at, &link.code), Vec::new()));
    }
    entries
}

/// Reads a link for `principal`: another owner's link is "not found".
pub fn load_for(txn: &dyn ReadTxn, code: &str, principal: &Principal) -> Outcome<LinkDoc> {
    let Some(bytes) = txn.get(Space::Links, code.as_bytes())? else {
        return Ok(Err(Error::NotFound));
    };
    let link = LinkDoc::decode(&bytes)?;
    if !principal.may_access(&link.owner) {
        return Ok(Err(Error::NotFound));
    }
    Ok(Ok(link))
}

/// A validated patch. `None` leaves a field alone; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub url: Option<Target>,
    pub expires_at: Option<Option<i64>>,
    pub max_clicks: Option<Option<u64>>,
    pub redirect: Option<RedirectStatus>,
    pub status: Option<LinkStatus>,
    pub forward_query: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub title: Option<Option<String>>,
    pub target_locked: Option<bool>,
    pub rules: Option<Vec<Rule>>,
    pub variants: Option<Vec<Variant>>,
    pub sticky_variants: Option<bool>,
}

/// Applies a patch.
pub fn patch(
    txn: &mut dyn Txn,
    code: &str,
    principal: &Principal,
    patch: &Patch,
    now: i64,
    threats: &ThreatList,
) -> Outcome<LinkDoc> {
    let old = match load_for(&*txn, code, principal)? {
        Ok(link) => link,
        Err(e) => return Ok(Err(e)),
    };
    if old.status == LinkStatus::Flagged && patch.status.is_some() && !principal.is_admin() {
        return Ok(Err(Error::Forbidden(
            "this link is flagged; only an admin can change its status".into(),
        )));
    }
    if patch.status == Some(LinkStatus::Flagged) && !principal.is_admin() {
        return Ok(Err(Error::Forbidden(
            "only an admin can flag a link; report it instead".into(),
        )));
    }
    if let Some(url) = &patch.url
        && let Some(refusal) = blocklist_refusal(txn, url)?
    {
        return Ok(Err(refusal));
    }
    let retarget = patch.url.as_ref().filter(|url| **url != old.url);
    if old.target_locked && retarget.is_some() && !principal.is_admin() {
        return Ok(Err(Error::Forbidden(
            "this link's target is locked; only an admin can change it".into(),
        )));
    }
    if old.target_locked && patch.target_locked == Some(false) && !principal.is_admin() {
        return Ok(Err(Error::Forbidden(
            "only an admin can unlock a link's target".into(),
        )));
    }
    let mut link = old.clone();
    apply(&mut link, patch);
    if link.routing != old.routing {
        if old.target_locked && !principal.is_admin() {
            return Ok(Err(Error::Forbidden(
                "this link's target is locked; only an admin can change its rules or variants"
                    .into(),
            )));
        }
        if let Some(routing) = &link.routing
            && let Err((field, reason)) = check_routing(routing)
        {
            return Ok(Err(Error::invalid(field, reason)));
        }
        if let Some(refusal) = routing_refusal(txn, link.routing.as_deref())? {
            return Ok(Err(refusal));
        }
    }
    if let Some(url) = retarget {
        link.target_changes = old.target_changes.saturating_add(1);
        link.target_changed_at = Some(now);
        link.previous_targets.push(PreviousTarget {
            until: now,
            target: old.url.clone(),
        });
        let extra = link
            .previous_targets
            .len()
            .saturating_sub(PREVIOUS_TARGETS_KEPT);
        link.previous_targets.drain(..extra);
        let entry = HistoryDoc {
            at: now,
            from: old.url.to_string(),
            to: url.to_string(),
            by: principal.key_name.clone(),
        };
        txn.set(
            Space::History,
            &history_key(link.id.0, link.target_changes),
            &entry.encode(),
        )?;
    }
    // Activating a link is creating one: its target must pass the blocklist
    // and the threat list as they are now.
    if link.status == LinkStatus::Active && old.status != LinkStatus::Active {
        let host = host_of(&link.url).unwrap_or_default();
        if let Some(domain) = blocked_by(txn, &host)? {
            return Ok(Err(Error::invalid(
                "status",
                format!("the link's domain {domain} is blocked; it cannot be activated"),
            )));
        }
        if threats.matching(&link.url).is_some() {
            return Ok(Err(Error::invalid(
                "status",
                "the link's target is on the threat list; it cannot be activated",
            )));
        }
    }
    // A limit at or below the clicks already counted exhausts the link now.
    if let (LinkStatus::Active, Some(max)) = (link.status, link.max_clicks)
        && human_clicks(&*txn, link.id.0)? >= max
    {
        link.status = LinkStatus::Exhausted;
    }
    link.updated_at = now;
    write_link(txn, &link, Some(&old))?;
    Ok(Ok(link))
}

/// Sets the fields a patch names, with the status changes they imply.
fn apply(link: &mut LinkDoc, patch: &Patch) {
    if let Some(url) = &patch.url {
        link.url.clone_from(url);
    }
    if let Some(expires_at) = patch.expires_at {
        link.expires_at = expires_at;
        // A new expiry revives an expired link; clearing it does too.
        if link.status == LinkStatus::Expired {
            link.status = LinkStatus::Active;
        }
    }
    if let Some(max_clicks) = patch.max_clicks {
        link.max_clicks = max_clicks;
        if link.status == LinkStatus::Exhausted {
            link.status = LinkStatus::Active;
        }
    }
    if let Some(redirect) = patch.redirect {
        link.redirect = redirect;
    }
    if let Some(status) = patch.status {
        link.status = status;
        link.flag_reason = (status == LinkStatus::Flagged).then_some(FlagReason::Admin);
    }
    if let Some(forward_query) = patch.forward_query {
        link.forward_query = forward_query;
    }
    if let Some(tags) = &patch.tags {
        link.tags.clone_from(tags);
    }
    if let Some(locked) = patch.target_locked {
        link.target_locked = locked;
    }
    if let Some(title) = &patch.title {
        link.title.clone_from(title);
    }
    if patch.rules.is_some() || patch.variants.is_some() || patch.sticky_variants.is_some() {
        let routing = link.routing.get_or_insert_with(|| {
            Box::new(Routing {
                sticky: true,
                ..Routing::default()
            })
        });
        if let Some(rules) = &patch.rules {
            routing.rules.clone_from(rules);
        }
        if let Some(variants) = &patch.variants {
            routing.variants.clone_from(variants);
        }
        if let Some(sticky) = patch.sticky_variants {
            routing.sticky = sticky;
        }
        if routing.is_empty() {
            link.routing = None;
        }
    }
}

/// The whole routing checked: conditions, weights, limits and size. The
/// field is `rules` or `variants`, by what is wrong.
pub fn check_routing(routing: &Routing) -> Result<(), (&'static str, String)> {
    routing.check().map_err(|e| (e.field, e.message))
}

/// Deletes a link; its code is retired for good.
pub fn delete(txn: &mut dyn Txn, code: &str, principal: &Principal) -> Outcome<()> {
    let link = match load_for(&*txn, code, principal)? {
        Ok(link) => link,
        Err(e) => return Ok(Err(e)),
    };
    txn.clear(Space::Links, code.as_bytes())?;
    if let Some(key) = host_index_key(&link.url, code) {
        txn.clear(Space::ByHost, &key)?;
    }
    txn.clear(Space::ByOwner, &keys::pair(&link.owner, code))?;
    for tag in &link.tags {
        txn.clear(Space::ByTag, &keys::pair(tag, code))?;
    }
    if let Some(at) = link.expires_at {
        txn.clear(Space::ByExpiry, &keys::expiry(at, code))?;
    }
    txn.set(Space::Retired, code.as_bytes(), &link.id.0.to_le_bytes())?;
    txn.clear(Space::Limited, &keys::link_id(link.id.0))?;
    for n in 1..=link.target_changes {
        txn.clear(Space::History, &history_key(link.id.0, n))?;
    }
    let change = ChangeDoc {
        event: webhooks::deleted_event(&*txn, &link)?,
        code: link.code,
        record: None,
    };
    txn.log_change(&change.encode())?;
    Ok(Ok(()))
}

/// Marks links whose expiry has passed, up to `limit`. Returns how many.
pub fn expire_due(txn: &mut dyn Txn, now: i64, limit: usize) -> StoreResult<usize> {
    let due = txn.range(
        Space::ByExpiry,
        &[],
        &keys::expiry(now.saturating_add(1), ""),
        limit,
    )?;
    let mut expired = 0;
    for (key, _) in due {
        txn.clear(Space::ByExpiry, &key)?;
        let code = String::from_utf8_lossy(&key[8..]).into_owned();
        let Some(bytes) = txn.get(Space::Links, code.as_bytes())? else {
            continue;
        };
        let old = LinkDoc::decode(&bytes)?;
        if old.status != LinkStatus::Active || old.expires_at.is_none_or(|at| at > now) {
            continue;
        }
        let mut link = old.clone();
        link.status = LinkStatus::Expired;
        link.updated_at = now;
        write_link(txn, &link, Some(&old))?;
        expired += 1;
    }
    Ok(expired)
}

/// Marks a link exhausted once its human clicks reach its `max_clicks`.
/// Returns whether it did.
pub fn exhaust_if_due(txn: &mut dyn Txn, link_id: u64, now: i64) -> StoreResult<bool> {
    let Some(code) = txn.get(Space::Limited, &keys::link_id(link_id))? else {
        return Ok(false);
    };
    let Some(bytes) = txn.get(Space::Links, &code)? else {
        txn.clear(Space::Limited, &keys::link_id(link_id))?;
        return Ok(false);
    };
    let old = LinkDoc::decode(&bytes)?;
    let Some(max) = old.max_clicks.filter(|_| old.status == LinkStatus::Active) else {
        return Ok(false);
    };
    if human_clicks(&*txn, link_id)? < max {
        return Ok(false);
    }
    let mut link = old.clone();
    link.status = LinkStatus::Exhausted;
    link.updated_at = now;
    write_link(txn, &link, Some(&old))?;
    Ok(true)
}

/// The key of a link's `n`-th change of target (from 1).
fn history_key(link_id: u64, n: u32) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&link_id.to_be_bytes());
    key[8..].copy_from_slice(&n.to_be_bytes());
    key
}

/// A link's changes of target, oldest first: up to `limit` after the
/// `after`-th.
pub fn history(
    txn: &dyn ReadTxn,
    link_id: u64,
    after: u32,
    limit: usize,
) -> StoreResult<Vec<(u32, HistoryDoc)>> {
    let start = history_key(link_id, after.saturating_add(1));
    let end = (link_id + 1).to_be_bytes();
    txn.range(Space::History, &start, &end, limit)?
        .into_iter()
        .map(|(key, value)| {
            let n = key
                .get(8..12)
                .and_then(|n| n.try_into().ok())
                .map_or(0, u32::from_be_bytes);
            Ok((n, HistoryDoc::decode(&value)?))
        })
        .collect()
}

/// Gives a new link the `visits` counted by the system it came from (an
/// import): its total and human clicks start there, and a link whose
/// `max_clicks` they reach is exhausted at once.
pub fn start_counts(txn: &mut dyn Txn, link: &LinkDoc, visits: u64, now: i64) -> StoreResult<()> {
    if visits == 0 {
        return Ok(());
    }
    let visits = i64::try_from(visits).unwrap_or(i64::MAX);
    txn.add(Space::Counters, &keys::clicks(link.id.0), visits)?;
    txn.add(Space::Counters, &keys::humans(link.id.0), visits)?;
    exhaust_if_due(txn, link.id.0, now)?;
    Ok(())
}

/// What [`start_counts`] does, for a bulk load: marks `link` exhausted
/// when its `visits` reach its `max_clicks`, and gives its counter entries.
pub fn starting_counts(link: &mut LinkDoc, visits: u64) -> Vec<(Space, Vec<u8>, Vec<u8>)> {
    if visits == 0 {
        return Vec::new();
    }
    if link.status == LinkStatus::Active && link.max_clicks.is_some_and(|max| visits >= max) {
        link.status = LinkStatus::Exhausted;
    }
    let visits = i64::try_from(visits)
        .unwrap_or(i64::MAX)
        .to_le_bytes()
        .to_vec();
    vec![
        (Space::Counters, keys::clicks(link.id.0), visits.clone()),
        (Space::Counters, keys::humans(link.id.0), visits),
    ]
}

/// The code of a link id, if it ever existed.
pub fn code_of(txn: &dyn ReadTxn, link_id: u64) -> StoreResult<Option<String>> {
    Ok(txn
        .get(Space::ById, &keys::link_id(link_id))?
        .map(|c| String::from_utf8_lossy(&c).into_owned()))
}

/// A link's human clicks.
pub fn human_clicks(txn: &dyn ReadTxn, link_id: u64) -> StoreResult<u64> {
    Ok(txn
        .get(Space::Counters, &keys::humans(link_id))?
        .map_or(0, |v| u64::try_from(keys::counter_value(&v)).unwrap_or(0)))
}

/// Reads one link.
pub fn get(txn: &dyn ReadTxn, code: &str) -> StoreResult<Option<LinkDoc>> {
    txn.get(Space::Links, code.as_bytes())?
        .map(|bytes| LinkDoc::decode(&bytes))
        .transpose()
}

/// A link's total clicks.
pub fn clicks(txn: &dyn ReadTxn, link_id: u64) -> StoreResult<u64> {
    Ok(txn
        .get(Space::Counters, &keys::clicks(link_id))?
        .and_then(|v| v.try_into().ok())
        .map_or(0, |b: [u8; 8]| i64::from_le_bytes(b).max(0) as u64))
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub owner: Option<String>,
    pub tag: Option<String>,
    /// List codes strictly after this one.
    pub after: Option<String>,
    pub limit: usize,
}

/// One page of links in code order, and the cursor of the next page.
pub fn list(txn: &dyn ReadTxn, query: &ListQuery) -> StoreResult<(Vec<LinkDoc>, Option<String>)> {
    let after = query.after.as_deref().unwrap_or("");
    let mut links = Vec::with_capacity(query.limit);
    // Scan a little more than a page at a time; entries filtered out by a
    // second condition (tag and owner) are skipped.
    let (space, prefix) = match (&query.tag, &query.owner) {
        (Some(tag), _) => (Space::ByTag, keys::pair(tag, "")),
        (None, Some(owner)) => (Space::ByOwner, keys::pair(owner, "")),
        (None, None) => (Space::Links, Vec::new()),
    };
    let end = if prefix.is_empty() {
        vec![0xff]
    } else {
        prefix_end(&prefix)
    };
    let mut start = prefix.clone();
    start.extend_from_slice(after.as_bytes());
    if !after.is_empty() {
        start.push(0);
    }
    loop {
        let pairs: Pairs = txn.range(space, &start, &end, query.limit + 1)?;
        let exhausted = pairs.len() <= query.limit;
        for (key, value) in &pairs {
            let code = &key[prefix.len()..];
            let link = if space == Space::Links {
                LinkDoc::decode(value)?
            } else {
                match txn.get(Space::Links, code)? {
                    Some(bytes) => LinkDoc::decode(&bytes)?,
                    None => continue,
                }
            };
            if query.owner.as_ref().is_some_and(|o| *o != link.owner) {
                continue;
            }
            if links.len() == query.limit {
                let next = links.last().map(|l: &LinkDoc| l.code.to_string());
                return Ok((links, next));
            }
            links.push(link);
        }
        if exhausted {
            return Ok((links, None));
        }
        let (last, _) = pairs.last().expect("a full page is not empty");
        start.clone_from(last);
        start.push(0);
    }
}

#[cfg(test)]
mod tests {
    //! The link operations against the embedded store, one transaction at
    //! a time as the committer runs them.

    use std::sync::Arc;

    use super::*;
    use crate::db::Backend;
    use crate::db::redb::RedbBackend;
    use crate::model::Role;

    struct Store {
        backend: Arc<dyn Backend>,
        _dir: tempfile::TempDir,
        permutation: Permutation,
    }

    fn store() -> Store {
        let dir = tempfile::tempdir().unwrap();
        Store {
            backend: Arc::new(RedbBackend::open(dir.path()).unwrap()),
            _dir: dir,
            permutation: Permutation::new(&[7; 32]),
        }
    }

    impl Store {
        /// Runs `body` in one write transaction and returns its value.
        fn write<T>(&self, mut body: impl FnMut(&mut dyn Txn) -> StoreResult<T>) -> T {
            let mut out = None;
            self.backend
                .write(&mut |txn| {
                    out = Some(body(txn)?);
                    Ok(())
                })
                .unwrap();
            out.unwrap()
        }

        fn create(&self, new: &NewLink) -> Result<Created, Error> {
            self.write(|txn| create(txn, new, &self.permutation))
        }

        fn get(&self, code: &str) -> Option<LinkDoc> {
            self.backend.read(|txn| get(txn, code)).unwrap()
        }
    }

    fn user(owner: &str) -> Principal {
        Principal {
            key_id: format!("key_{owner}"),
            key_name: owner.into(),
            owner: owner.into(),
            role: Role::User,
            domains: None,
            user_id: None,
            session_id: None,
        }
    }

    fn admin() -> Principal {
        Principal {
            role: Role::Admin,
            ..user("admin")
        }
    }

    fn new_link(id: u64, code: CodePlan, owner: &str) -> NewLink {
        NewLink {
            id: LinkId(id),
            code,
            domain: None,
            url: Target::parse(&format!("https://example.com/{id}")).unwrap(),
            owner: owner.into(),
            now: 1_000,
            expires_at: None,
            max_clicks: None,
            redirect: RedirectStatus::Found,
            forward_query: false,
            tags: Vec::new(),
            title: None,
            target_locked: false,
            routing: None,
        }
    }

    fn alias(code: &str) -> CodePlan {
        CodePlan::Alias(Code::parse(code).unwrap())
    }

    fn counter() -> CodePlan {
        CodePlan::Generated {
            strategy: Strategy::Counter,
            length: 6,
        }
    }

    #[test]
    fn a_created_link_is_stored_indexed_and_logged() {
        let store = store();
        let before = store.backend.read(|txn| txn.last_seq()).unwrap();
        let created = store.create(&new_link(1, alias("hello"), "ann")).unwrap();
        assert!(created.created);
        assert_eq!(created.link.code.as_str(), "hello");
        assert_eq!(created.link.status, LinkStatus::Active);
        assert_eq!(store.get("hello"), Some(created.link.clone()));
        let (owned, after) = store
            .backend
            .read(|txn| {
                let owned = txn.get(Space::ByOwner, &keys::pair("ann", "hello"))?;
                Ok((owned, txn.last_seq()?))
            })
            .unwrap();
        assert!(owned.is_some(), "indexed by owner");
        assert!(after > before, "the create logged a change");
        assert_eq!(
            store
                .backend
                .read(|txn| code_of(txn, 1))
                .unwrap()
                .as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn generated_codes_differ_and_counter_codes_follow_the_id() {
        let store = store();
        let a = store.create(&new_link(1, counter(), "ann")).unwrap().link;
        let b = store.create(&new_link(2, counter(), "ann")).unwrap().link;
        assert_ne!(a.code, b.code);
        assert_eq!(a.code.len(), 6);
        assert_eq!(a.code.as_str(), store.permutation.code_for_id(1, 6));
    }

    #[test]
    fn an_alias_is_claimed_once_even_within_one_transaction() {
        let store = store();
        let results = store.write(|txn| {
            let first = create(txn, &new_link(1, alias("taken"), "ann"), &store.permutation)?;
            let second = create(txn, &new_link(2, alias("taken"), "bob"), &store.permutation)?;
            Ok((first.map(|c| c.created), second.map(|c| c.created)))
        });
        assert_eq!(results.0, Ok(true));
        assert!(
            matches!(&results.1, Err(Error::Conflict { field, .. }) if field == "alias"),
            "{:?}",
            results.1
        );
        assert_eq!(store.get("taken").unwrap().owner, "ann");
    }

    #[test]
    fn racing_claims_of_one_alias_leave_exactly_one_winner() {
        let store = Arc::new(store());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    store
                        .create(&new_link(i, alias("race"), &format!("owner{i}")))
                        .is_ok()
                })
            })
            .collect();
        let winners = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 1);
    }

    #[test]
    fn the_hash_strategy_returns_the_existing_link_for_the_same_owner_and_target() {
        let store = store();
        let hash = || CodePlan::Generated {
            strategy: Strategy::Hash,
            length: 7,
        };
        let first = store.create(&new_link(1, hash(), "ann")).unwrap();
        let again = store
            .create(&NewLink {
                id: LinkId(2),
                ..new_link(1, hash(), "ann")
            })
            .unwrap();
        assert!(first.created);
        assert!(!again.created);
        assert_eq!(again.link.code, first.link.code);
        let other_owner = store.create(&new_link(1, hash(), "bob")).unwrap();
        assert_ne!(other_owner.link.code, first.link.code);
    }

    #[test]
    fn a_deleted_code_is_retired_for_good() {
        let store = store();
        store.create(&new_link(1, alias("gone"), "ann")).unwrap();
        assert_eq!(
            store.write(|txn| delete(txn, "gone", &user("bob"))),
            Err(Error::NotFound),
            "another owner cannot see it"
        );
        assert_eq!(store.write(|txn| delete(txn, "gone", &user("ann"))), Ok(()));
        assert_eq!(store.get("gone"), None);
        let again = store.create(&new_link(2, alias("gone"), "ann"));
        assert!(
            matches!(&again, Err(Error::Conflict { reason, .. }) if reason.contains("never handed out again")),
            "{again:?}"
        );
        assert_eq!(
            store.write(|txn| delete(txn, "gone", &user("ann"))),
            Err(Error::NotFound)
        );
    }

    fn add_domain(store: &Store, name: &str) {
        let doc = domains::DomainDoc {
            name: name.into(),
            scoped: true,
            https: true,
            https_redirect: false,
            hsts_max_age: 0,
            root_redirect: None,
            not_found_redirect: None,
            expired_redirect: None,
            port: None,
            acme: false,
            created_at: 1_000,
            updated_at: 1_000,
        };
        store
            .write(|txn| domains::create(txn, doc.clone(), false))
            .unwrap();
    }

    #[test]
    fn codes_and_retired_codes_are_per_domain() {
        let store = store();
        store.write(|txn| domains::migrate(txn, "https://acme.link", 1_000));
        add_domain(&store, "go.acme.com");
        add_domain(&store, "promo.example");
        let on = |id, domain: Option<&str>| NewLink {
            domain: domain.map(str::to_owned),
            ..new_link(id, alias("sale"), "ann")
        };
        let bare = store.create(&on(1, None)).unwrap().link;
        let go = store.create(&on(2, Some("go.acme.com"))).unwrap().link;
        let promo = store.create(&on(3, Some("promo.example"))).unwrap().link;
        assert_eq!(
            bare.code.as_str(),
            "sale",
            "the first domain keeps bare codes"
        );
        assert_eq!(go.code.as_str(), "go.acme.com/sale");
        assert_eq!(promo.code.as_str(), "promo.example/sale");
        assert!(matches!(
            store.create(&on(4, Some("go.acme.com"))),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            store.create(&on(5, Some("nope.example"))),
            Err(Error::Invalid { field, .. }) if field == "domain"
        ));

        assert_eq!(
            store.write(|txn| delete(txn, "go.acme.com/sale", &user("ann"))),
            Ok(())
        );
        let again = store.create(&on(6, Some("go.acme.com")));
        assert!(
            matches!(&again, Err(Error::Conflict { reason, .. }) if reason.contains("never handed out again"))
        );
        assert!(store.get("sale").is_some() && store.get("promo.example/sale").is_some());

        let generated = NewLink {
            domain: Some("go.acme.com".into()),
            ..new_link(
                7,
                CodePlan::Generated {
                    strategy: Strategy::Counter,
                    length: 6,
                },
                "ann",
            )
        };
        let made = store.create(&generated).unwrap().link;
        assert!(
            made.code.as_str().starts_with("go.acme.com/"),
            "{}",
            made.code
        );

        let looped = NewLink {
            url: Target::parse("https://GO.acme.com/sale").unwrap(),
            ..on(8, None)
        };
        assert!(matches!(
            store.create(&looped),
            Err(Error::Invalid { reason, .. }) if reason.contains("short domain")
        ));
    }

    #[test]
    fn a_domain_with_links_or_the_default_is_not_removed() {
        let store = store();
        store.write(|txn| domains::migrate(txn, "http://localhost:8080", 1_000));
        assert!(
            !store.write(|txn| domains::migrate(txn, "http://other.example", 1_000)),
            "once"
        );
        add_domain(&store, "go.acme.com");
        store
            .create(&NewLink {
                domain: Some("go.acme.com".into()),
                ..new_link(1, alias("a1"), "ann")
            })
            .unwrap();
        let refused = |name: &str| store.write(|txn| domains::delete(txn, name));
        assert!(
            matches!(refused("localhost"), Err(Error::Conflict { reason, .. }) if reason.contains("default"))
        );
        assert!(
            matches!(refused("go.acme.com"), Err(Error::Conflict { reason, .. }) if reason.contains("still has links"))
        );
        store
            .write(|txn| delete(txn, "go.acme.com/a1", &user("ann")))
            .unwrap();
        assert_eq!(refused("go.acme.com"), Ok(()));
        assert_eq!(refused("go.acme.com"), Err(Error::NotFound));
        let patch = domains::DomainPatch {
            make_default: false,
            hsts_max_age: Some(60),
            ..Default::default()
        };
        let localhost = store
            .write(|txn| domains::patch(txn, "localhost", &patch, 2_000))
            .unwrap();
        assert_eq!(
            (localhost.hsts_max_age, localhost.port, localhost.scoped),
            (60, Some(8080), false)
        );
        assert_eq!(localhost.base_url(), "http://localhost:8080");
    }

    #[test]
    fn patches_move_links_between_states_by_the_rules() {
        let store = store();
        store
            .create(&NewLink {
                expires_at: Some(1_500),
                ..new_link(1, alias("life"), "ann")
            })
            .unwrap();
        let threats = ThreatList::default();
        let patch_as = |who: &Principal, patch: &Patch, now: i64| {
            store.write(|txn| super::patch(txn, "life", who, patch, now, &threats))
        };
        // The sweeper expires it; a new expiry revives it.
        assert_eq!(store.write(|txn| expire_due(txn, 2_000, 100)), 1);
        assert_eq!(store.get("life").unwrap().status, LinkStatus::Expired);
        let revived = patch_as(
            &user("ann"),
            &Patch {
                expires_at: Some(Some(9_000)),
                ..Patch::default()
            },
            2_001,
        )
        .unwrap();
        assert_eq!(revived.status, LinkStatus::Active);
        assert_eq!(revived.updated_at, 2_001);
        // Only admins flag, and only admins change a flagged link's status.
        let flag = Patch {
            status: Some(LinkStatus::Flagged),
            ..Patch::default()
        };
        assert!(matches!(
            patch_as(&user("ann"), &flag, 2_002),
            Err(Error::Forbidden(_))
        ));
        let flagged = patch_as(&admin(), &flag, 2_003).unwrap();
        assert_eq!(flagged.flag_reason, Some(FlagReason::Admin));
        let activate = Patch {
            status: Some(LinkStatus::Active),
            ..Patch::default()
        };
        assert!(matches!(
            patch_as(&user("ann"), &activate, 2_004),
            Err(Error::Forbidden(_))
        ));
        let active = patch_as(&admin(), &activate, 2_005).unwrap();
        assert_eq!(
            (active.status, active.flag_reason),
            (LinkStatus::Active, None)
        );
        // A limit at or below the clicks already counted exhausts it now.
        store.write(|txn| txn.add(Space::Counters, &keys::humans(1), 3));
        let limited = patch_as(
            &user("ann"),
            &Patch {
                max_clicks: Some(Some(3)),
                ..Patch::default()
            },
            2_006,
        )
        .unwrap();
        assert_eq!(limited.status, LinkStatus::Exhausted);
        // Raising the limit revives it.
        let raised = patch_as(
            &user("ann"),
            &Patch {
                max_clicks: Some(Some(10)),
                ..Patch::default()
            },
            2_007,
        )
        .unwrap();
        assert_eq!(raised.status, LinkStatus::Active);
        assert_eq!(
            patch_as(&user("bob"), &Patch::default(), 2_008),
            Err(Error::NotFound)
        );
    }

    #[test]
    fn reaching_max_clicks_exhausts_a_link_once() {
        let store = store();
        store
            .create(&NewLink {
                max_clicks: Some(2),
                ..new_link(5, alias("few"), "ann")
            })
            .unwrap();
        assert!(!store.write(|txn| exhaust_if_due(txn, 5, 1_100)));
        store.write(|txn| txn.add(Space::Counters, &keys::humans(5), 2));
        assert!(store.write(|txn| exhaust_if_due(txn, 5, 1_200)));
        assert_eq!(store.get("few").unwrap().status, LinkStatus::Exhausted);
        assert!(
            !store.write(|txn| exhaust_if_due(txn, 5, 1_300)),
            "only once"
        );
    }

    #[test]
    fn the_expiry_sweep_takes_only_what_is_due_and_at_most_its_limit() {
        let store = store();
        for (id, at) in [(1, 100), (2, 200), (3, 300), (4, 10_000)] {
            store
                .create(&NewLink {
                    expires_at: Some(at),
                    ..new_link(id, alias(&format!("exp{id}")), "ann")
                })
                .unwrap();
        }
        assert_eq!(store.write(|txn| expire_due(txn, 500, 2)), 2);
        assert_eq!(store.write(|txn| expire_due(txn, 500, 100)), 1);
        assert_eq!(store.write(|txn| expire_due(txn, 500, 100)), 0);
        let status = |code: &str| store.get(code).unwrap().status;
        assert_eq!(status("exp3"), LinkStatus::Expired);
        assert_eq!(status("exp4"), LinkStatus::Active);
    }

    #[test]
    fn list_pages_follow_their_cursor_and_filters() {
        let store = store();
        for (id, code, owner, tag) in [
            (1, "e1", "ann", "x"),
            (2, "a1", "ann", "y"),
            (3, "c1", "bob", "x"),
            (4, "b1", "ann", "x"),
            (5, "d1", "ann", "y"),
        ] {
            store
                .create(&NewLink {
                    tags: vec![tag.into()],
                    ..new_link(id, alias(code), owner)
                })
                .unwrap();
        }
        let page = |owner: Option<&str>, tag: Option<&str>, after: Option<String>| {
            let query = ListQuery {
                owner: owner.map(str::to_owned),
                tag: tag.map(str::to_owned),
                after,
                limit: 2,
            };
            let (links, next) = store.backend.read(|txn| list(txn, &query)).unwrap();
            let codes: Vec<String> = links.iter().map(|l| l.code.to_string()).collect();
            (codes, next)
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (codes, next) = page(Some("ann"), None, after);
            seen.extend(codes);
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, ["a1", "b1", "d1", "e1"], "every page, in code order");
        assert_eq!(
            page(None, Some("x"), None),
            (
                vec!["b1".to_owned(), "c1".to_owned()],
                Some("c1".to_owned())
            )
        );
        assert_eq!(
            page(Some("ann"), Some("x"), None),
            (vec!["b1".to_owned(), "e1".to_owned()], None)
        );
        assert_eq!(
            page(None, None, Some("d1".into())),
            (vec!["e1".to_owned()], None)
        );
    }
}
