//! Scenarios and their weighted transactions (goose's model).

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

/// A named mix of transactions.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Scenario {
    /// Redirects over every link, uniformly.
    RedirectUniform,
    /// Redirects over a hot set: Zipf-distributed link popularity.
    RedirectZipf,
    /// Creates only (needs --control and --token).
    Create,
    /// Stats reads of seeded links (needs --control and --token).
    Stats,
    /// 100 Zipf redirects for every create (needs --control and --token).
    Mixed,
}

/// One kind of request: goose's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transaction {
    RedirectUniform,
    RedirectZipf,
    Create,
    Stats,
}

impl Transaction {
    pub const ALL: [Self; 4] = [
        Self::RedirectUniform,
        Self::RedirectZipf,
        Self::Create,
        Self::Stats,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::RedirectUniform => "redirect-uniform",
            Self::RedirectZipf => "redirect-zipf",
            Self::Create => "create",
            Self::Stats => "stats",
        }
    }

    /// Whether the transaction talks to the control plane.
    #[must_use]
    pub fn needs_control(self) -> bool {
        matches!(self, Self::Create | Self::Stats)
    }
}

impl Scenario {
    /// The scenario's weighted transactions.
    #[must_use]
    pub fn weights(self) -> Vec<(Transaction, u32)> {
        match self {
            Self::RedirectUniform => vec![(Transaction::RedirectUniform, 1)],
            Self::RedirectZipf => vec![(Transaction::RedirectZipf, 1)],
            Self::Create => vec![(Transaction::Create, 1)],
            Self::Stats => vec![(Transaction::Stats, 1)],
            Self::Mixed => vec![(Transaction::RedirectZipf, 100), (Transaction::Create, 1)],
        }
    }
}

/// Parses `name:weight,name:weight`.
pub fn parse_weights(text: &str) -> Result<Vec<(Transaction, u32)>> {
    let mut weights = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once(':')
            .with_context(|| format!("--weights: {part:?} is not name:weight"))?;
        let transaction = Transaction::ALL
            .into_iter()
            .find(|t| t.name() == name.trim())
            .with_context(|| {
                format!("--weights: unknown transaction {name:?} (redirect-uniform, redirect-zipf, create, stats)")
            })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("--weights: {weight:?} is not a whole number"))?;
        if weight > 0 {
            weights.push((transaction, weight));
        }
    }
    if weights.is_empty() {
        bail!("--weights names no transaction with a positive weight");
    }
    Ok(weights)
}

/// The transactions in weighted proportion; each connection walks it from
/// its own offset, as goose's users do.
#[must_use]
pub fn schedule(weights: &[(Transaction, u32)]) -> Vec<Transaction> {
    weights
        .iter()
        .flat_map(|&(t, w)| std::iter::repeat_n(t, w as usize))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_refuse_clearly() {
        assert_eq!(
            parse_weights("redirect-zipf:100, create:1,stats:0").unwrap(),
            [(Transaction::RedirectZipf, 100), (Transaction::Create, 1)]
        );
        let e = parse_weights("redirect:1").unwrap_err().to_string();
        assert!(e.contains("unknown transaction"), "{e}");
        assert!(parse_weights("create:x").is_err());
        assert!(parse_weights("create:0").is_err());
        assert!(parse_weights("create").is_err());
    }

    #[test]
    fn a_schedule_holds_each_transaction_by_weight() {
        let schedule = schedule(&Scenario::Mixed.weights());
        assert_eq!(schedule.len(), 101);
        assert_eq!(
            schedule
                .iter()
                .filter(|t| **t == Transaction::Create)
                .count(),
            1
        );
    }
}
