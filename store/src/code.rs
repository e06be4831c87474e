//! Validated newtypes for link codes and redirect targets.

use std::fmt;

/// The longest code, in bytes.
pub const CODE_LEN_MAX: usize = 64;

/// The longest target URL the table can hold, in bytes. The control plane
/// applies its own, usually smaller, configured limit before this one.
pub const TARGET_LEN_MAX: usize = 8192;

/// Whether `bytes` is a well-formed code: 1 to [`CODE_LEN_MAX`] bytes of
/// `[A-Za-z0-9_-]`.
#[must_use]
pub fn is_valid_code(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= CODE_LEN_MAX
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// Why a string is not a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("code is empty")]
    Empty,
    #[error("code is {len} bytes long, the limit is {CODE_LEN_MAX}")]
    TooLong { len: usize },
    #[error("code contains {found:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadCharacter { found: char },
}

/// A short code: 1 to 64 bytes of `[A-Za-z0-9_-]`, case-sensitive.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "String"))]
pub struct Code(Box<str>);

impl TryFrom<String> for Code {
    type Error = CodeError;
    fn try_from(text: String) -> Result<Self, CodeError> {
        Self::parse(&text)
    }
}

impl From<Code> for String {
    fn from(code: Code) -> Self {
        code.0.into()
    }
}

impl Code {
    /// Checks `text` and wraps it.
    pub fn parse(text: &str) -> Result<Self, CodeError> {
        if text.is_empty() {
            return Err(CodeError::Empty);
        }
        if text.len() > CODE_LEN_MAX {
            return Err(CodeError::TooLong { len: text.len() });
        }
        if let Some(found) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(CodeError::BadCharacter { found });
        }
        Ok(Self(text.into()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::ops::Deref for Code {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Code {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a storable redirect target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target is empty")]
    Empty,
    #[error("target is {len} bytes long, the limit is {TARGET_LEN_MAX}")]
    TooLong { len: usize },
    #[error("target contains the control character {byte:#04x} at byte {position}")]
    ControlCharacter { byte: u8, position: usize },
}

/// A redirect target as the table stores it: non-empty, at most
/// [`TARGET_LEN_MAX`] bytes, and free of control characters, so it can be
/// written into a `Location` header as it is. Whether it is a *good* URL is the
/// control plane's decision, made before it gets here.
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "String"))]
pub struct Target(Box<str>);

impl TryFrom<String> for Target {
    type Error = TargetError;
    fn try_from(text: String) -> Result<Self, TargetError> {
        Self::parse(&text)
    }
}

impl From<Target> for String {
    fn from(target: Target) -> Self {
        target.0.into()
    }
}

impl Target {
    /// Checks `text` and wraps it.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        check_target_bytes(text.as_bytes())?;
        Ok(Self(text.into()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks raw target bytes against the rules of [`Target`].
pub(crate) fn check_target_bytes(bytes: &[u8]) -> Result<(), TargetError> {
    if bytes.is_empty() {
        return Err(TargetError::Empty);
    }
    if bytes.len() > TARGET_LEN_MAX {
        return Err(TargetError::TooLong { len: bytes.len() });
    }
    if let Some(position) = bytes.iter().position(|b| *b < 0x20 || *b == 0x7f) {
        return Err(TargetError::ControlCharacter {
            byte: bytes[position],
            position,
        });
    }
    Ok(())
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::ops::Deref for Target {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_accept_the_alphabet_and_refuse_the_rest() {
        assert!(Code::parse("aZ09_-").is_ok());
        assert_eq!(Code::parse(""), Err(CodeError::Empty));
        assert_eq!(
            Code::parse(&"a".repeat(65)),
            Err(CodeError::TooLong { len: 65 })
        );
        assert!(Code::parse(&"a".repeat(64)).is_ok());
        assert_eq!(
            Code::parse("a/b"),
            Err(CodeError::BadCharacter { found: '/' })
        );
        assert_eq!(
            Code::parse("é"),
            Err(CodeError::BadCharacter { found: 'é' })
        );
        assert!(!is_valid_code(b"a+"));
        assert!(is_valid_code(b"abc"));
    }

    #[test]
    fn targets_refuse_control_characters() {
        assert!(Target::parse("https://example.com/a?b=c").is_ok());
        assert_eq!(
            Target::parse("https://e.com/\r\nSet-Cookie: x"),
            Err(TargetError::ControlCharacter {
                byte: b'\r',
                position: 14
            })
        );
        assert_eq!(Target::parse(""), Err(TargetError::Empty));
        assert!(matches!(
            Target::parse(&"a".repeat(TARGET_LEN_MAX + 1)),
            Err(TargetError::TooLong { .. })
        ));
    }
}
