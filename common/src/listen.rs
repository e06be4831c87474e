//! Listen addresses checked before start-up: a taken one is an error at once
//! that names the setting and every way to change it (Pingora would retry
//! the bind for half a minute and then abort; `up` would have printed and
//! stored an admin token first).

use std::net::SocketAddr;

/// A listen address and how an operator sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The configuration key, e.g. `proxy_listen`.
    pub setting: &'static str,
    pub addr: SocketAddr,
    /// The command-line flag that sets it, where the binary has one.
    flag: Option<String>,
}

impl Listener {
    /// A listener set by the configuration file and the environment.
    #[must_use]
    pub fn new(setting: &'static str, addr: SocketAddr) -> Self {
        Self {
            setting,
            addr,
            flag: None,
        }
    }

    /// A listener also set by `--<setting>` (underscores as dashes).
    #[must_use]
    pub fn with_flag(setting: &'static str, addr: SocketAddr) -> Self {
        Self {
            flag: Some(format!("--{}", setting.replace('_', "-"))),
            ..Self::new(setting, addr)
        }
    }

    /// `SHORTLINE_<SETTING>`.
    #[must_use]
    pub fn env_var(&self) -> String {
        format!("SHORTLINE_{}", self.setting.to_ascii_uppercase())
    }

    /// Binds and releases the address (with `SO_REUSEADDR`, as the servers
    /// bind it); a taken address is an [`Listener::unusable`] error.
    pub fn check(&self) -> anyhow::Result<()> {
        use socket2::{Domain, Socket, Type};
        let probe =
            Socket::new(Domain::for_address(self.addr), Type::STREAM, None).and_then(|socket| {
                socket.set_reuse_address(true)?;
                socket.bind(&self.addr.into())?;
                socket.listen(1)
            });
        probe.map_err(|e| self.unusable(&e))
    }

    /// The error for an address that cannot be listened on.
    #[must_use]
    pub fn unusable(&self, error: &std::io::Error) -> anyhow::Error {
        let flag = self
            .flag
            .as_deref()
            .map_or_else(String::new, |flag| format!("{flag} or "));
        anyhow::anyhow!(
            "{} {} cannot be used: {error}; another process may be listening there. \
             Choose another address with {flag}{} (or {} in the config file)",
            self.setting,
            self.addr,
            self.env_var(),
            self.setting
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_address_names_its_setting_variable_and_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = Listener::with_flag("proxy_metrics_listen", addr)
            .check()
            .unwrap_err()
            .to_string();
        for part in [
            "proxy_metrics_listen",
            "SHORTLINE_PROXY_METRICS_LISTEN",
            "--proxy-metrics-listen",
            &addr.to_string(),
        ] {
            assert!(error.contains(part), "{part} missing from: {error}");
        }
        let error = Listener::new("proxy_listen", addr)
            .check()
            .unwrap_err()
            .to_string();
        assert!(error.contains("SHORTLINE_PROXY_LISTEN"), "{error}");
        assert!(!error.contains("--"), "no flag to name: {error}");
        drop(taken);
        let any_free = "127.0.0.1:0".parse().unwrap();
        assert!(Listener::new("proxy_listen", any_free).check().is_ok());
    }
}
