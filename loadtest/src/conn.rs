//! One HTTP/1.1 keep-alive connection that reconnects when the server closes
//! it (a keep-alive limit, a restart) and never sends before it is ready.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// `host:port` of an `http://` base URL.
pub fn authority(base: &str) -> Result<String> {
    let rest = base
        .strip_prefix("http://")
        .context("only http:// targets are supported")?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

/// An answer with its body read.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Answer {
    /// The body as text, cut to `max` characters, for failure reports.
    #[must_use]
    pub fn body_excerpt(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim_end();
        let mut excerpt: String = text.chars().take(max).collect();
        if text.chars().count() > max {
            excerpt.push_str("...");
        }
        excerpt
    }
}

/// A reconnecting client connection to one server.
#[derive(Debug)]
pub struct Conn {
    authority: String,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    /// Extra headers sent with every request (the API token).
    authorization: Option<String>,
}

impl Conn {
    #[must_use]
    pub fn new(authority: &str, token: Option<&str>) -> Self {
        Self {
            authority: authority.to_owned(),
            sender: None,
            authorization: token.map(|t| format!("Bearer {t}")),
        }
    }

    /// Opens the connection now (and waits until it can send).
    pub async fn open(&mut self) -> Result<()> {
        self.ready().await.map(drop)
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {} failed", self.authority))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// A sender that is ready for a request: the open connection, or a new
    /// one when the server has closed it.
    async fn ready(&mut self) -> Result<&mut http1::SendRequest<Full<Bytes>>> {
        for _ in 0..2 {
            if self
                .sender
                .as_ref()
                .is_none_or(http1::SendRequest::is_closed)
            {
                self.sender = Some(self.connect().await?);
            }
            let sender = self.sender.as_mut().expect("connected above");
            if sender.ready().await.is_ok() {
                return Ok(self.sender.as_mut().expect("connected above"));
            }
            self.sender = None;
        }
        bail!("{} closed every new connection", self.authority)
    }

    /// Sends one request and reads the whole answer. A connection that
    /// broke mid-request is dropped, so the next request reconnects.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let sender = self.ready().await?;
        let result = async {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Answer {
                status,
                location,
                body,
            })
        }
        .await;
        result.map_err(|e| {
            self.sender = None;
            anyhow::Error::new(e).context(format!("{method} {path} on {}", self.authority))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_come_from_http_urls_only() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("http://h:1/x/y").unwrap(), "h:1");
        assert!(authority("https://h").is_err());
    }

    #[test]
    fn excerpts_are_cut() {
        let answer = Answer {
            status: 200,
            location: None,
            body: Bytes::from_static("abcdef".as_bytes()),
        };
        assert_eq!(answer.body_excerpt(3), "abc...");
        assert_eq!(answer.body_excerpt(10), "abcdef");
    }
}
