//! People's accounts: users with an email and an argon2id password, the
//! one-time tokens that set a password (an invitation, an admin's reset),
//! sign-in with lock-out, and browser sessions.
//!
//! Secrets (session and one-time tokens) are random, shown once, and stored
//! only as SHA-256 hashes, like API keys. Passwords are hashed with argon2id
//! ([`hash_password`]); hashing is slow on purpose, so callers do it outside
//! any transaction and pass the result in.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

use crate::db::{ReadTxn, Space, StoreResult, Txn, prefix_end};
pub use crate::domain::auth::new_secret;
use crate::domain::auth::token_hash;
use crate::domain::{Error, Outcome};
use crate::model::{Role, SessionDoc, TokenKind, UserDoc, UserTokenDoc};

/// argon2id memory cost in KiB (19 MiB), iterations and lanes: the first of
/// OWASP's recommended settings for argon2id.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
pub const ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_LANES: u32 = 1;
/// Shortest and longest passwords taken (bytes of UTF-8).
pub const PASSWORD_MIN: usize = 12;
pub const PASSWORD_MAX: usize = 256;
/// Failed sign-ins in a row that lock an account, and for how long.
pub const FAILURES_TO_LOCK: u32 = 5;
pub const LOCK_SECONDS: i64 = 15 * 60;
/// How long an invitation, and a reset, may wait to be used.
pub const INVITATION_SECONDS: i64 = 7 * 86_400;
pub const RESET_SECONDS: i64 = 86_400;
/// Users one store holds at most in a list answer.
pub const LIST_MAX: usize = 10_000;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None)
        .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The argon2id PHC string of `password`, with a random salt.
#[must_use]
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password under its limits")
        .to_string()
}

/// Whether `password` matches `hash`. With no hash (an unknown email, an
/// account not yet set up), a fixed hash is checked anyway, so the answer
/// takes as long either way and does not tell which emails exist.
#[must_use]
pub fn verify_password(hash: Option<&str>, password: &str) -> bool {
    static DECOY: LazyLock<String> = LazyLock::new(|| hash_password("not anyone's password"));
    let (stored, real) = match hash {
        Some(hash) => (hash, true),
        None => (DECOY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && real
}

/// A password's problem, if it has one.
#[must_use]
pub fn password_problem(password: &str) -> Option<String> {
    if password.len() < PASSWORD_MIN {
        return Some(format!("a password has at least {PASSWORD_MIN} characters"));
    }
    if password.len() > PASSWORD_MAX {
        return Some(format!("a password has at most {PASSWORD_MAX} bytes"));
    }
    if password.chars().any(char::is_control) {
        return Some("a password has no control characters".into());
    }
    None
}

/// An email normalised (trimmed, lowercase), or why it is not one.
pub fn normalize_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_control() || c.is_whitespace())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && email.matches('@').count() == 1;
    if valid {
        Ok(email)
    } else {
        Err(format!("{email:?} is not an email address"))
    }
}

/// A user.
pub fn get(txn: &dyn ReadTxn, id: &str) -> StoreResult<Option<UserDoc>> {
    txn.get(Space::Users, id.as_bytes())?
        .map(|b| UserDoc::decode(&b))
        .transpose()
}

/// The user with `email` (normalised).
pub fn by_email(txn: &dyn ReadTxn, email: &str) -> StoreResult<Option<UserDoc>> {
    match txn.get(Space::UserEmails, email.as_bytes())? {
        Some(id) => get(txn, &String::from_utf8_lossy(&id)),
        None => Ok(None),
    }
}

/// Every user, in id order.
pub fn list(txn: &dyn ReadTxn) -> StoreResult<Vec<UserDoc>> {
    txn.range(Space::Users, &[], &[0xff], LIST_MAX)?
        .iter()
        .map(|(_, v)| UserDoc::decode(v))
        .collect()
}

/// Stores a user.
pub fn put(txn: &mut dyn Txn, user: &UserDoc) -> StoreResult<()> {
    txn.set(Space::Users, user.id.as_bytes(), &user.encode())
}

/// Adds a user and their invitation (`token`'s hash), unless the email is
/// taken.
pub fn create(txn: &mut dyn Txn, user: &UserDoc, invitation: &[u8; 32]) -> Outcome<()> {
    if txn.get(Space::UserEmails, user.email.as_bytes())?.is_some() {
        return Ok(Err(Error::conflict(
            "email",
            format!("{} has an account already", user.email),
        )));
    }
    put(txn, user)?;
    txn.set(Space::UserEmails, user.email.as_bytes(), user.id.as_bytes())?;
    grant(
        txn,
        invitation,
        TokenKind::Invitation,
        &user.id,
        user.created_at + INVITATION_SECONDS,
    )?;
    Ok(Ok(()))
}

/// Stores a one-time token's hash for `user_id`.
pub fn grant(
    txn: &mut dyn Txn,
    hash: &[u8; 32],
    kind: TokenKind,
    user_id: &str,
    expires_at: i64,
) -> StoreResult<()> {
    let doc = UserTokenDoc {
        kind,
        user_id: user_id.to_owned(),
        expires_at,
    };
    txn.set(Space::UserTokens, hash, &doc.encode())
}

/// Uses a one-time token to set a password (already hashed): the token is
/// spent, failures and lock-out are cleared, and every session of the user
/// is ended. Returns the user.
pub fn redeem(txn: &mut dyn Txn, token: &str, password_hash: &str, now: i64) -> Outcome<UserDoc> {
    let hash = token_hash(token);
    let refused = || {
        Error::invalid(
            "token",
            "this link is not valid: it was used already, it expired, or it was never issued",
        )
    };
    let Some(bytes) = txn.get(Space::UserTokens, &hash)? else {
        return Ok(Err(refused()));
    };
    let doc = UserTokenDoc::decode(&bytes)?;
    txn.clear(Space::UserTokens, &hash)?;
    if doc.expires_at <= now {
        return Ok(Err(refused()));
    }
    let Some(mut user) = get(&*txn, &doc.user_id)? else {
        return Ok(Err(refused()));
    };
    user.password_hash = Some(password_hash.to_owned());
    user.password_changed_at = Some(now);
    user.failed_logins = 0;
    user.locked_until = None;
    put(txn, &user)?;
    end_sessions(txn, &user.id, None)?;
    Ok(Ok(user))
}

/// What a sign-in attempt came to.
#[derive(Debug, Clone)]
pub enum SignIn {
    /// The password was right; a session may start.
    Accepted(UserDoc),
    /// Wrong email or password (which one is not said).
    Refused,
    /// Too many failures: locked until then (Unix seconds).
    Locked(i64),
    Disabled,
}

/// Records a sign-in attempt whose password check came out `matched`:
/// failures count toward a lock-out; a success clears them. A locked
/// account refuses even the right password until the lock ends.
pub fn sign_in(txn: &mut dyn Txn, email: &str, matched: bool, now: i64) -> StoreResult<SignIn> {
    let Some(mut user) = by_email(&*txn, email)? else {
        return Ok(SignIn::Refused);
    };
    if let Some(until) = user.locked_until.filter(|until| *until > now) {
        return Ok(SignIn::Locked(until));
    }
    if !matched {
        user.failed_logins += 1;
        let locked = user.failed_logins >= FAILURES_TO_LOCK;
        if locked {
            user.failed_logins = 0;
            user.locked_until = Some(now + LOCK_SECONDS);
        }
        put(txn, &user)?;
        return Ok(if locked {
            SignIn::Locked(now + LOCK_SECONDS)
        } else {
            SignIn::Refused
        });
    }
    if user.disabled {
        return Ok(SignIn::Disabled);
    }
    user.failed_logins = 0;
    user.locked_until = None;
    user.last_login_at = Some(now);
    put(txn, &user)?;
    Ok(SignIn::Accepted(user))
}

/// Starts a session under `hash` (its token's).
pub fn start_session(txn: &mut dyn Txn, hash: &[u8; 32], session: &SessionDoc) -> StoreResult<()> {
    txn.set(Space::Sessions, hash, &session.encode())?;
    txn.set(
        Space::UserSessions,
        &user_session_key(&session.user_id, &session.id),
        hash,
    )
}

fn user_session_key(user_id: &str, session_id: &str) -> Vec<u8> {
    [user_id.as_bytes(), b"\0", session_id.as_bytes()].concat()
}

/// The live session of a token, with its user: `None` when there is none,
/// it expired, or its user is gone or disabled.
pub fn session(
    txn: &dyn ReadTxn,
    token: &str,
    now: i64,
) -> StoreResult<Option<(SessionDoc, UserDoc)>> {
    let Some(bytes) = txn.get(Space::Sessions, &token_hash(token))? else {
        return Ok(None);
    };
    let session = SessionDoc::decode(&bytes)?;
    if session.expires_at <= now {
        return Ok(None);
    }
    Ok(get(txn, &session.user_id)?
        .filter(|user| !user.disabled)
        .map(|user| (session, user)))
}

/// A user's sessions, live or expired, with their token hashes.
pub fn sessions_of(txn: &dyn ReadTxn, user_id: &str) -> StoreResult<Vec<([u8; 32], SessionDoc)>> {
    let prefix = [user_id.as_bytes(), b"\0"].concat();
    let mut out = Vec::new();
    for (_, hash) in txn.range(Space::UserSessions, &prefix, &prefix_end(&prefix), LIST_MAX)? {
        let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
            continue;
        };
        if let Some(bytes) = txn.get(Space::Sessions, &hash)? {
            out.push((hash, SessionDoc::decode(&bytes)?));
        }
    }
    Ok(out)
}

/// Ends one session of `user_id` by its id. Returns whether it existed.
pub fn end_session(txn: &mut dyn Txn, user_id: &str, session_id: &str) -> StoreResult<bool> {
    let key = user_session_key(user_id, session_id);
    let Some(hash) = txn.get(Space::UserSessions, &key)? else {
        return Ok(false);
    };
    txn.clear(Space::Sessions, &hash)?;
    txn.clear(Space::UserSessions, &key)?;
    Ok(true)
}

/// Ends every session of `user_id` but `keep`. Returns how many ended.
pub fn end_sessions(txn: &mut dyn Txn, user_id: &str, keep: Option<&str>) -> StoreResult<usize> {
    let mut ended = 0;
    for (hash, session) in sessions_of(&*txn, user_id)? {
        if keep == Some(session.id.as_str()) {
            continue;
        }
        txn.clear(Space::Sessions, &hash)?;
        txn.clear(Space::UserSessions, &user_session_key(user_id, &session.id))?;
        ended += 1;
    }
    Ok(ended)
}

/// Removes a user, their sessions and email; their links stay, owned by
/// their email, and keys bound to them stop working.
pub fn delete(txn: &mut dyn Txn, id: &str) -> StoreResult<bool> {
    let Some(user) = get(&*txn, id)? else {
        return Ok(false);
    };
    end_sessions(txn, id, None)?;
    txn.clear(Space::Users, id.as_bytes())?;
    txn.clear(Space::UserEmails, user.email.as_bytes())?;
    Ok(true)
}

/// Whether another enabled admin than `id` exists: the last one may not
/// be demoted, disabled or deleted.
pub fn other_admin(txn: &dyn ReadTxn, id: &str) -> StoreResult<bool> {
    Ok(list(txn)?
        .iter()
        .any(|u| u.id != id && u.role == Role::Admin && !u.disabled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(Some(&hash), "correct horse battery"));
        assert!(!verify_password(Some(&hash), "correct horse battery!"));
        assert!(
            !verify_password(None, "not anyone's password"),
            "the decoy never passes"
        );
        assert_ne!(hash, hash_password("correct horse battery"), "salted");
    }

    #[test]
    fn emails_and_passwords_are_checked() {
        assert_eq!(
            normalize_email(" Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "ann",
            "@example.com",
            "ann@example",
            "a@b@example.com",
            "a n@example.com",
            "ann@.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert!(password_problem("short").is_some());
        assert!(password_problem("long enough password").is_none());
        assert!(password_problem("with a\ttab in it").is_some());
    }
}
