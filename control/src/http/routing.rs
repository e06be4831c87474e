//! Targeting rules and splits as the API writes them: names for devices,
//! systems and browsers, RFC 3339 times, and each target through the same
//! checks as a link's own. A refusal names the rule or variant.

use serde::{Deserialize, Serialize};
use shortline_store::routing::{self, Conditions, QueryCondition, Routing, Rule, Variant};

use super::problem::{ApiError, AppResult};
use super::wire::{parse_rfc3339, rfc3339};
use crate::state::AppState;

/// A rule: where clicks that meet every condition given go. The first
/// rule that holds wins; a click no rule holds for goes to the link's
/// `url`, or a variant.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// Where a click that meets the rule goes.
    pub url: String,
    /// Any of mobile, tablet, desktop (by the `User-Agent`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device: Vec<String>,
    /// Any of ios, android, windows, macos, linux.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub os: Vec<String>,
    /// Any of chrome, firefox, safari, edge, opera.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub browser: Vec<String>,
    /// Language tags (`en`, `pt-BR`): the client's preferred language by
    /// `Accept-Language` and its q-values is one of them; `en` also holds
    /// for `en-GB`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub language: Vec<String>,
    /// Two-letter country codes, by the proxy's GeoIP database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub country: Vec<String>,
    /// A query parameter present, or equal to `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<QueryBody>,
    /// RFC 3339 time from which the rule holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// RFC 3339 time from which it no longer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// A query parameter a rule asks for.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub name: String,
    /// Absent: present with any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A target of a split and its weight (shares are weight over the sum).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantBody {
    pub url: String,
    /// 1 to 65535.
    pub weight: u16,
}

/// Names to bits, refusing a name not in `names`.
fn mask(names: &[(&str, u8)], given: &[String], what: &str) -> Result<u8, String> {
    given.iter().try_fold(0, |mask, name| {
        let lower = name.to_ascii_lowercase();
        names
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, bit)| mask | bit)
            .ok_or_else(|| {
                let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                format!("{what} {name:?} is not one of {}", known.join(", "))
            })
    })
}

fn names(names: &'static [(&'static str, u8)], mask: u8) -> Vec<String> {
    routing::names_of(names, mask).map(str::to_owned).collect()
}

/// The reason of a refusal, whatever field it named.
fn reason(e: ApiError) -> String {
    match e {
        ApiError::Invalid { reason, .. } => reason,
        other => other.to_string(),
    }
}

impl RuleBody {
    fn to_rule(
        &self,
        check_target: &impl Fn(&str) -> AppResult<shortline_store::Target>,
    ) -> Result<Rule, String> {
        let time = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| parse_rfc3339(field, t).map_err(reason))
                .transpose()
        };
        let when = Conditions {
            devices: mask(&routing::device::NAMES, &self.device, "device")?,
            os: mask(&routing::os::NAMES, &self.os, "os")?,
            browsers: mask(&routing::browser::NAMES, &self.browser, "browser")?,
            languages: self
                .language
                .iter()
                .map(|l| l.to_ascii_lowercase())
                .collect(),
            countries: self
                .country
                .iter()
                .map(|c| c.to_ascii_uppercase())
                .collect(),
            query: self.query.as_ref().map(|q| QueryCondition {
                name: q.name.clone(),
                value: q.value.clone(),
            }),
            from: time("from", &self.from)?,
            until: time("until", &self.until)?,
        };
        let target = check_target(&self.url).map_err(|e| format!("url: {}", reason(e)))?;
        Ok(Rule { when, target })
    }

    fn from_rule(rule: &Rule) -> Self {
        let when = &rule.when;
        Self {
            url: rule.target.as_str().to_owned(),
            device: names(&routing::device::NAMES, when.devices),
            os: names(&routing::os::NAMES, when.os),
            browser: names(&routing::browser::NAMES, when.browsers),
            language: when.languages.clone(),
            country: when.countries.clone(),
            query: when.query.as_ref().map(|q| QueryBody {
                name: q.name.clone(),
                value: q.value.clone(),
            }),
            from: when.from.map(rfc3339),
            until: when.until.map(rfc3339),
        }
    }
}

/// The rules as a create or patch gives them, checked one by one
/// (`rules: rule 2: ...`); the limits over the whole are checked with the
/// link's variants (`links::check_routing`).
pub fn rules(
    state: &AppState,
    given: &[RuleBody],
    check_target: impl Fn(&AppState, &str) -> AppResult<shortline_store::Target>,
) -> AppResult<Vec<Rule>> {
    if given.len() > routing::RULES_MAX {
        return Err(ApiError::invalid(
            "rules",
            format!("at most {} rules", routing::RULES_MAX),
        ));
    }
    let checked = |url: &str| check_target(state, url);
    given
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            rule.to_rule(&checked)
                .map_err(|e| ApiError::invalid("rules", format!("rule {}: {e}", i + 1)))
        })
        .collect()
}

/// The variants as a create or patch gives them (`variants: variant 2: ...`).
pub fn variants(
    state: &AppState,
    given: &[VariantBody],
    check_target: impl Fn(&AppState, &str) -> AppResult<shortline_store::Target>,
) -> AppResult<Vec<Variant>> {
    if given.len() > routing::VARIANTS_MAX {
        return Err(ApiError::invalid(
            "variants",
            format!("at most {} variants", routing::VARIANTS_MAX),
        ));
    }
    given
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let target = check_target(state, &v.url).map_err(|e| {
                ApiError::invalid("variants", format!("variant {}: url: {}", i + 1, reason(e)))
            })?;
            Ok(Variant {
                weight: v.weight,
                target,
            })
        })
        .collect()
}

/// The rules as the API shows them.
#[must_use]
pub fn rules_out(routing: &Routing) -> Vec<RuleBody> {
    routing.rules.iter().map(RuleBody::from_rule).collect()
}

/// The variants as the API shows them.
#[must_use]
pub fn variants_out(routing: &Routing) -> Vec<VariantBody> {
    routing
        .variants
        .iter()
        .map(|v| VariantBody {
            url: v.target.as_str().to_owned(),
            weight: v.weight,
        })
        .collect()
}
