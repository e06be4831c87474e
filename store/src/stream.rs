//! The change stream between the control plane and its proxies: one JSON
//! message per line (`GET /internal/v1/changes`). Both ends use this type and
//! these functions, so the framing is defined once.

use serde::{Deserialize, Serialize};

use crate::{Change, Seq};

/// Longest line a reader accepts; a longer one is a broken stream.
pub const LINE_BYTES_MAX: usize = 64 << 20;

/// One message on the change stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Message {
    /// Committed changes, in sequence order.
    Changes { changes: Vec<Change> },
    /// Segments covering `seq` exist: a base and the deltas over it, listed
    /// by `GET /internal/v1/segments` ([`Manifest`]). When `required`, the
    /// changes before it are gone from the log: the subscriber must install
    /// them before applying what follows.
    Snapshot { seq: Seq, required: bool },
    /// Nothing new; the newest committed sequence.
    Heartbeat { seq: Seq },
}

impl Message {
    /// The message as one line: JSON and a newline.
    #[must_use]
    pub fn to_line(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("stream messages always serialise");
        bytes.push(b'\n');
        bytes
    }
}

/// The segments that make up control's table, `GET /internal/v1/segments`:
/// a base and the chain of deltas over it, oldest first, each downloadable
/// by its file name (`GET /internal/v1/segments/{file}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub base: ManifestBase,
    pub deltas: Vec<ManifestDelta>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestBase {
    pub file: String,
    pub sequence: Seq,
    pub seed: u64,
    pub links: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestDelta {
    pub file: String,
    pub parent: Seq,
    pub sequence: Seq,
    /// Codes it changes or deletes.
    pub entries: u64,
    pub bytes: u64,
}

impl Manifest {
    /// The newest change the segments cover.
    #[must_use]
    pub fn sequence(&self) -> Seq {
        self.deltas
            .last()
            .map_or(self.base.sequence, |delta| delta.sequence)
    }

    /// The base's identity.
    #[must_use]
    pub fn base_id(&self) -> crate::BaseId {
        crate::BaseId {
            sequence: self.base.sequence,
            seed: self.base.seed,
        }
    }
}

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("a change-stream line is longer than {LINE_BYTES_MAX} bytes")]
    LineTooLong,
    #[error("a change-stream line is not a message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Splits whole lines off the front of what a stream has delivered so far.
#[derive(Debug, Default)]
pub struct LineReader {
    buffer: Vec<u8>,
}

impl LineReader {
    /// Adds bytes as they arrive.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole message, if a whole line has arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>, StreamError> {
        let Some(end) = self.buffer.iter().position(|&b| b == b'\n') else {
            if self.buffer.len() > LINE_BYTES_MAX {
                return Err(StreamError::LineTooLong);
            }
            return Ok(None);
        };
        let message = serde_json::from_slice(&self.buffer[..end]);
        self.buffer.drain(..=end);
        Ok(Some(message?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Code, LinkId, LinkRecord, Target};

    #[test]
    fn messages_round_trip_whatever_the_chunking() {
        let record = LinkRecord::new(
            Code::parse("abc").unwrap(),
            Target::parse("https://example.com/").unwrap(),
            LinkId(1),
        );
        let messages = [
            Message::Snapshot {
                seq: Seq(3),
                required: true,
            },
            Message::Changes {
                changes: vec![Change {
                    seq: Seq(4),
                    code: Code::parse("abc").unwrap(),
                    record: Some(record),
                }],
            },
            Message::Heartbeat { seq: Seq(4) },
        ];
        let wire: Vec<u8> = messages.iter().flat_map(Message::to_line).collect();
        for chunk in [1, 7, wire.len()] {
            let mut reader = LineReader::default();
            let mut read = Vec::new();
            for piece in wire.chunks(chunk) {
                reader.push(piece);
                while let Some(message) = reader.next_message().unwrap() {
                    read.push(message);
                }
            }
            assert_eq!(read, messages, "chunks of {chunk} bytes");
        }
        assert_eq!(
            String::from_utf8(Message::Heartbeat { seq: Seq(9) }.to_line()).unwrap(),
            "{\"kind\":\"heartbeat\",\"seq\":9}\n"
        );
    }

    #[test]
    fn a_bad_line_is_an_error_and_the_rest_still_reads() {
        let mut reader = LineReader::default();
        reader.push(b"{\"kind\":\"gossip\"}\n{\"kind\":\"heartbeat\",\"seq\":1}\n");
        assert!(matches!(
            reader.next_message(),
            Err(StreamError::Malformed(_))
        ));
        assert_eq!(
            reader.next_message().unwrap(),
            Some(Message::Heartbeat { seq: Seq(1) })
        );
        assert_eq!(reader.next_message().unwrap(), None);
    }
}
