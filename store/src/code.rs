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

/// The longest domain name a table key can carry, in bytes: with `/` and
/// the longest code, a scoped key still fits a record's one-byte length.
pub const DOMAIN_LEN_MAX: usize = 190;

/// The longest table key, in bytes.
pub const KEY_LEN_MAX: usize = DOMAIN_LEN_MAX + 1 + CODE_LEN_MAX;

/// Whether `bytes` is a domain name as table keys carry it: at most
/// [`DOMAIN_LEN_MAX`] bytes of dot-separated labels, each 1 to 63 lowercase
/// ASCII letters, digits and inner `-` (an internationalised name in its
/// `xn--` form).
#[must_use]
pub fn is_valid_domain(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= DOMAIN_LEN_MAX
        && bytes.split(|&b| b == b'.').all(|label| {
            (1..=63).contains(&label.len())
                && label[0] != b'-'
                && label[label.len() - 1] != b'-'
                && label
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

/// Whether `bytes` is a well-formed table key: a code of the default scope
/// (`sale`), a code scoped to a domain (`go.acme.com/sale`), a domain's
/// settings (`.go.acme.com`), the settings of the default scope (`.`), or
/// the answer to an ACME HTTP-01 challenge (`~token`, the token in the code
/// alphabet, as ACME's base64url tokens are). No code holds `/`, `.` or
/// `~`, so the forms never collide.
#[must_use]
pub fn is_valid_key(bytes: &[u8]) -> bool {
    if let Some(token) = bytes.strip_prefix(b"~") {
        return is_valid_code(token);
    }
    if let Some(domain) = bytes.strip_prefix(b".") {
        return domain.is_empty() || is_valid_domain(domain);
    }
    match bytes.iter().position(|&b| b == b'/') {
        Some(at) => is_valid_domain(&bytes[..at]) && is_valid_code(&bytes[at + 1..]),
        None => is_valid_code(bytes),
    }
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
    #[error("{key:?} is not a table key (a code, domain/code, .domain or .)")]
    BadKey { key: String },
}

/// A short code: 1 to 64 bytes of `[A-Za-z0-9_-]`, case-sensitive; or, made
/// by [`Code::key`], any table key (see [`is_valid_key`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "String"))]
pub struct Code(Box<str>);

/// Deserialising accepts any table key: a change carries scoped keys and
/// domain settings as well as plain codes.
impl TryFrom<String> for Code {
    type Error = CodeError;
    fn try_from(text: String) -> Result<Self, CodeError> {
        Self::key(&text)
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

    /// Checks that `text` is a table key (see [`is_valid_key`]) and wraps it.
    pub fn key(text: &str) -> Result<Self, CodeError> {
        if is_valid_key(text.as_bytes()) {
            Ok(Self(text.into()))
        } else {
            Err(CodeError::BadKey { key: text.into() })
        }
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
    fn keys_are_codes_scoped_codes_or_domain_settings() {
        for good in [
            "abc",
            "go.acme.com/sale",
            "xn--bcher-kva.example/a",
            ".go.acme.com",
            ".",
            "~LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
        ] {
            assert!(is_valid_key(good.as_bytes()), "{good}");
            assert_eq!(Code::key(good).unwrap().as_str(), good);
        }
        let domain = ["a".repeat(63), "b".repeat(63), "c".repeat(62)].join(".");
        assert_eq!(domain.len(), DOMAIN_LEN_MAX);
        let longest = format!("{domain}/{}", "b".repeat(CODE_LEN_MAX));
        assert!(is_valid_key(longest.as_bytes()));
        for bad in [
            "",
            "/a",
            "Go.acme.com/a",
            "go.acme.com/",
            "a/b/c",
            "..",
            ".Go",
            "a..b/c",
            "-a.b/c",
            "~",
            "~a.b",
            "go acme/a",
            &format!("{}/a", "a".repeat(DOMAIN_LEN_MAX + 1)),
        ] {
            assert!(!is_valid_key(bad.as_bytes()), "{bad}");
            assert!(Code::key(bad).is_err());
        }
        assert!(
            Code::parse("go.acme.com/sale").is_err(),
            "a code is never scoped"
        );
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
