//! The layered configuration both binaries use: a TOML file (optional), then
//! `SHORTLINE_<KEY>` environment variables, then (in the caller) flags. One
//! syntax for every value from the environment; a bad value is an error
//! that names its key.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// How a key's environment value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// As it is.
    Text,
    /// A whole number (durations are whole numbers with the unit in the key:
    /// `_ms`, `_seconds`).
    Integer,
    /// `true`, `1`, `yes`, `on` or `false`, `0`, `no`, `off`, in any case.
    Bool,
    /// Comma-separated, blanks dropped.
    List,
}

/// Log output: human-readable text or one JSON object per line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// The configuration value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// Logs to stderr at `RUST_LOG` (default `info`), colours only on a
/// terminal, in `format`.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// A boolean from the environment.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Reads `file` (if any) as a table and lays the `SHORTLINE_<KEY>` variables
/// of `env` over it, for the keys in `keys`; other variables are ignored.
pub fn table(
    file: Option<&Path>,
    env: &[(String, String)],
    keys: &[(&str, Kind)],
) -> Result<toml::Table> {
    let mut table = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?
            .parse::<toml::Table>()
            .with_context(|| format!("config file {} is not valid TOML", path.display()))?,
        None => toml::Table::new(),
    };
    for (name, value) in env {
        let Some(key) = name.strip_prefix("SHORTLINE_").map(str::to_ascii_lowercase) else {
            continue;
        };
        let Some((_, kind)) = keys.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        let parsed = match kind {
            Kind::Text => toml::Value::String(value.clone()),
            Kind::Integer => toml::Value::Integer(value.trim().parse().map_err(|_| {
                anyhow::anyhow!("bad configuration: {name}={value:?}: {key} must be a whole number")
            })?),
            Kind::Bool => toml::Value::Boolean(parse_bool(value).ok_or_else(|| {
                anyhow::anyhow!(
                    "bad configuration: {name}={value:?}: {key} must be true or false (or yes/no, on/off, 1/0)"
                )
            })?),
            Kind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
        };
        table.insert(key, parsed);
    }
    Ok(table)
}

/// The settings in `table`; an error names the key it is about.
pub fn deserialize<T: DeserializeOwned>(table: &toml::Table) -> Result<T> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| {
            // Name the key: try each alone.
            for (key, value) in table {
                let mut alone = toml::Table::new();
                alone.insert(key.clone(), value.clone());
                if let Err(e) = toml::Value::Table(alone).try_into::<T>() {
                    return anyhow::anyhow!("bad configuration: {key}: {}", e.message().trim());
                }
            }
            anyhow::anyhow!("bad configuration: {}", e.message().trim())
        })
}

/// [`table`] then [`deserialize`].
pub fn layered<T: DeserializeOwned>(
    file: Option<&Path>,
    env: &[(String, String)],
    keys: &[(&str, Kind)],
) -> Result<T> {
    deserialize(&table(file, env, keys)?)
}

/// Checks that a setting is within its limits.
pub fn range(key: &str, value: u64, min: u64, max: u64) -> Result<()> {
    if value < min || value > max {
        bail!("bad configuration: {key} is {value}, it must be between {min} and {max}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Example {
        name: String,
        count: u32,
        on: bool,
        hosts: Vec<String>,
        log_format: LogFormat,
    }

    const KEYS: &[(&str, Kind)] = &[
        ("name", Kind::Text),
        ("count", Kind::Integer),
        ("on", Kind::Bool),
        ("hosts", Kind::List),
        ("log_format", Kind::Text),
    ];

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "name = \"file\"\ncount = 2\n").unwrap();
        let got: Example = layered(
            Some(&file),
            &env(&[
                ("SHORTLINE_COUNT", " 7 "),
                ("SHORTLINE_ON", "Yes"),
                ("SHORTLINE_HOSTS", "a.example, ,b.example"),
                ("SHORTLINE_LOG_FORMAT", "json"),
                ("SHORTLINE_UNKNOWN", "ignored"),
                ("HOME", "/"),
            ]),
            KEYS,
        )
        .unwrap();
        assert_eq!(got.name, "file");
        assert_eq!(got.count, 7);
        assert!(got.on);
        assert_eq!(got.hosts, ["a.example", "b.example"]);
        assert_eq!(got.log_format, LogFormat::Json);
    }

    #[test]
    fn booleans_have_one_syntax() {
        for yes in ["true", "1", "yes", "ON"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["false", "0", "no", "Off"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = |pairs: &[(&str, &str)]| {
            layered::<Example>(None, &env(pairs), KEYS)
                .unwrap_err()
                .to_string()
        };
        assert!(error(&[("SHORTLINE_COUNT", "many")]).contains("count"));
        assert!(error(&[("SHORTLINE_ON", "maybe")]).contains("on must be true or false"));
        assert!(error(&[("SHORTLINE_LOG_FORMAT", "xml")]).contains("log_format"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "count = -1\n").unwrap();
        let e = layered::<Example>(Some(&file), &[], KEYS)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad configuration: count"), "{e}");
        assert!(
            range("count", 0, 1, 9)
                .unwrap_err()
                .to_string()
                .contains("between 1 and 9")
        );
    }
}
