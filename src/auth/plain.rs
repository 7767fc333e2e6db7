//! SASL PLAIN (RFC 4616) as a server reads it: `[authzid] NUL authcid NUL
//! passwd`, with the checks Kafka's `PlainSaslServer` makes.

use crate::config::Secret;

/// What a PLAIN token says. `Debug` hides the password.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainToken {
    pub username: String,
    pub password: Secret,
}

/// Read a client's PLAIN token. The error names what is wrong with it,
/// never what it holds beyond the user name.
pub fn parse(token: &[u8]) -> Result<PlainToken, String> {
    let text = std::str::from_utf8(token).map_err(|_| "Authentication failed: the PLAIN token is not UTF-8".to_string())?;
    let fields: Vec<&str> = text.split('\0').collect();
    let [authzid, username, password] = fields[..] else {
        return Err(format!("Invalid SASL/PLAIN response: expected 3 tokens, got {}", fields.len()));
    };
    if username.is_empty() {
        return Err("Authentication failed: username not specified".to_string());
    }
    if password.is_empty() {
        return Err("Authentication failed: password not specified".to_string());
    }
    // Kafka acts as the authenticated user only: a client cannot ask to
    // act as someone else.
    if !authzid.is_empty() && authzid != username {
        return Err("Authentication failed: Client requested an authorization id that is different from username".to_string());
    }
    Ok(PlainToken { username: username.to_string(), password: Secret::new(password) })
}

/// Whether `given` is `expected`, in time that does not depend on where
/// they differ (their lengths may show).
pub fn password_matches(expected: &Secret, given: &Secret) -> bool {
    let (a, b) = (expected.expose().as_bytes(), given.expose().as_bytes());
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_user_and_password() {
        let t = parse(b"\0alice\0s3cret").unwrap();
        assert_eq!(t.username, "alice");
        assert_eq!(t.password.expose(), "s3cret");
        assert_eq!(parse(b"alice\0alice\0pw").unwrap().username, "alice", "authzid equal to the user");
        assert_eq!(parse(b"\0alice\0p\xc3\xa4ss").unwrap().password.expose(), "päss");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert!(parse(b"").unwrap_err().contains("expected 3 tokens, got 1"));
        assert!(parse(b"\0alice").unwrap_err().contains("expected 3 tokens, got 2"));
        assert!(parse(b"\0alice\0pw\0more").unwrap_err().contains("expected 3 tokens, got 4"));
        assert!(parse(b"\0\0pw").unwrap_err().contains("username not specified"));
        assert!(parse(b"\0alice\0").unwrap_err().contains("password not specified"));
        assert!(parse(b"bob\0alice\0pw").unwrap_err().contains("authorization id that is different"));
        assert!(parse(b"\0alice\0\xff").unwrap_err().contains("not UTF-8"));
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        let t = parse(b"\0alice\0hunter2").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
        for bad in [&b"bob\0alice\0hunter2"[..], b"\0alice\0hunter2\0x"] {
            assert!(!parse(bad).unwrap_err().contains("hunter2"));
        }
    }

    #[test]
    fn passwords_compare_whole() {
        let s = Secret::new("pw");
        assert!(password_matches(&s, &Secret::new("pw")));
        assert!(!password_matches(&s, &Secret::new("pw2")));
        assert!(!password_matches(&s, &Secret::new("p")));
        assert!(!password_matches(&s, &Secret::new("Pw")));
    }
}
