//! The OAUTHBEARER messages (RFC 7628) as Kafka exchanges them, for the
//! proxy's SASL server (clients) and SASL client (brokers).
//!
//! The client's initial response is a GS2 header, `n,` and an optional
//! `a=authzid`, then key=value pairs each ended by `\x01`, then a final
//! `\x01`: `n,,\x01auth=Bearer <token>\x01\x01`. Pairs other than `auth` are
//! SASL extensions (KIP-342). This module follows Kafka's
//! `OAuthBearerClientInitialResponse`: keys are letters, values printable
//! ASCII, the scheme `Bearer` in any case, a token of base64url characters
//! and dots. It refuses a key given twice (Kafka keeps the last one) so
//! that two readers of one message cannot see different tokens.
//!
//! On a bad token a Kafka broker does not fail the exchange at once: its
//! SaslAuthenticate response carries no error and, as the challenge, a JSON
//! status ([`error_response`]); the client answers with a lone `\x01`
//! ([`is_error_acknowledgement`]) and only then gets
//! SASL_AUTHENTICATION_FAILED, whose message is that JSON. A valid token
//! gets an empty challenge and completes the exchange. If the client named
//! an authzid, it must equal the token's principal.

use super::json;
use super::scram;
use crate::config::Secret;

/// Ends each key=value pair and the message.
const SEPARATOR: char = '\x01';
/// The RFC 7628 status for a token that failed validation, the one Kafka
/// sends.
pub const INVALID_TOKEN: &str = "invalid_token";

/// A client's first OAUTHBEARER message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInitialResponse {
    /// `a=`: the identity the client asks to act as, unescaped.
    pub authzid: Option<String>,
    pub token: Secret,
    /// SASL extensions (KIP-342), in message order.
    pub extensions: Vec<(String, String)>,
}

fn is_key(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic())
}

fn is_value(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| matches!(b, 0x21..=0x7e | b' ' | b'\t' | b'\r' | b'\n'))
}

/// What Kafka accepts as a bearer token: base64url characters and dots.
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl ClientInitialResponse {
    /// A message to send, checked so that [`to_bytes`](Self::to_bytes)
    /// writes what [`parse`](Self::parse) reads.
    pub fn new(
        token: Secret,
        authzid: Option<String>,
        extensions: Vec<(String, String)>,
    ) -> Result<ClientInitialResponse, String> {
        if !is_token(token.expose()) {
            return Err(
                "the token is empty or has characters a bearer token cannot have".to_string(),
            );
        }
        if authzid
            .as_deref()
            .is_some_and(|a| a.is_empty() || !a.is_ascii() || a.contains('\0'))
        {
            return Err("the authorization id must be non-empty ASCII without NUL".to_string());
        }
        for (i, (key, value)) in extensions.iter().enumerate() {
            if !is_key(key) || key == "auth" {
                return Err(format!("extension name {key:?} is invalid"));
            }
            if !is_value(value) {
                return Err(format!("the value of extension {key} is invalid"));
            }
            if extensions[..i].iter().any(|(k, _)| k == key) {
                return Err(format!("extension {key} appears twice"));
            }
        }
        Ok(ClientInitialResponse {
            authzid,
            token,
            extensions,
        })
    }

    /// The message bytes, as Kafka's client writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::from("n,");
        if let Some(authzid) = &self.authzid {
            out.push_str("a=");
            out.push_str(&scram::escape_name(authzid));
        }
        out.push(',');
        out.push(SEPARATOR);
        out.push_str("auth=Bearer ");
        out.push_str(self.token.expose());
        for (key, value) in &self.extensions {
            out.push(SEPARATOR);
            out.push_str(key);
            out.push('=');
            out.push_str(value);
        }
        out.push(SEPARATOR);
        out.push(SEPARATOR);
        out.into_bytes()
    }

    /// Reads a client's first message; the error says what is malformed
    /// and never quotes the token.
    pub fn parse(message: &[u8]) -> Result<ClientInitialResponse, String> {
        Self::parse_parts(message)
            .map_err(|why| format!("Invalid OAUTHBEARER client first message: {why}"))
    }

    fn parse_parts(message: &[u8]) -> Result<ClientInitialResponse, String> {
        let text = std::str::from_utf8(message)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or("not ASCII")?;
        let rest = text
            .strip_prefix("n,")
            .ok_or("the GS2 header must start with \"n,\" (no channel binding)")?;
        let (authzid, rest) = rest.split_once(',').ok_or("the GS2 header has no end")?;
        let authzid = match authzid {
            "" => None,
            a => {
                let name = a
                    .strip_prefix("a=")
                    .filter(|n| !n.is_empty() && !n.contains('\0'));
                let name = name.ok_or("the GS2 header's authzid must be \"a=name\"")?;
                Some(scram::unescape_name(name).ok_or("the authzid has an invalid escape")?)
            }
        };
        let pairs = rest
            .strip_prefix(SEPARATOR)
            .and_then(|r| r.strip_suffix(SEPARATOR))
            .ok_or("key=value pairs must start after \\x01 and end with \\x01")?;
        if !pairs.is_empty() && !pairs.ends_with(SEPARATOR) {
            return Err("the last key=value pair is not ended by \\x01".to_string());
        }
        let mut token = None;
        let mut extensions: Vec<(String, String)> = Vec::new();
        for pair in pairs.split_terminator(SEPARATOR) {
            let (key, value) = pair.split_once('=').ok_or("a pair has no '='")?;
            if !is_key(key) || !is_value(value) {
                return Err("a key=value pair is malformed".to_string());
            }
            if key == "auth" {
                if token.is_some() {
                    return Err("auth appears twice".to_string());
                }
                token = Some(bearer_token(value)?);
            } else if extensions.iter().any(|(k, _)| k == key) {
                return Err(format!("extension {key} appears twice"));
            } else {
                extensions.push((key.to_string(), value.to_string()));
            }
        }
        Ok(ClientInitialResponse {
            authzid,
            token: Secret::new(token.ok_or("'auth' not specified")?),
            extensions,
        })
    }
}

/// The token of an `auth` value: `Bearer <token>`, scheme in any case.
fn bearer_token(auth: &str) -> Result<String, String> {
    let (scheme, token) = auth.split_once(' ').ok_or("invalid 'auth' format")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the 'auth' scheme is not Bearer".to_string());
    }
    let token = token.trim_start_matches(' ');
    if !is_token(token) {
        return Err("invalid 'auth' format".to_string());
    }
    Ok(token.to_string())
}

/// The server's answer to a token that failed (RFC 7628 §3.2.2), as Kafka
/// writes it: `{"status":"invalid_token"}`, with `scope` and
/// `openid-configuration` when given.
pub fn error_response(
    status: &str,
    scope: Option<&str>,
    openid_configuration: Option<&str>,
) -> Vec<u8> {
    let mut out = format!("{{\"status\":{}", json::quote(status));
    if let Some(scope) = scope {
        out.push_str(&format!(", \"scope\":{}", json::quote(scope)));
    }
    if let Some(config) = openid_configuration {
        out.push_str(&format!(
            ", \"openid-configuration\":{}",
            json::quote(config)
        ));
    }
    out.push('}');
    out.into_bytes()
}

/// The server's error status, read by the proxy's SASL client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub status: String,
    pub scope: Option<String>,
    pub openid_configuration: Option<String>,
}

/// Reads a server challenge that reports a failed token; `None` when the
/// challenge is not such a JSON status.
pub fn parse_error_response(challenge: &[u8]) -> Option<ServerError> {
    let object = json::object(challenge).ok()?;
    let text = |name| {
        json::string_member(&object, name)
            .ok()
            .flatten()
            .map(str::to_string)
    };
    Some(ServerError {
        status: text("status")?,
        scope: text("scope"),
        openid_configuration: text("openid-configuration"),
    })
}

/// The client's reply to an error challenge (RFC 7628 §3.2.3).
pub const ERROR_ACKNOWLEDGEMENT: &[u8] = b"\x01";

/// Whether a client message acknowledges the server's error challenge.
pub fn is_error_acknowledgement(message: &[u8]) -> bool {
    message == ERROR_ACKNOWLEDGEMENT
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(message: &[u8]) -> ClientInitialResponse {
        ClientInitialResponse::parse(message).unwrap()
    }

    #[test]
    fn kafka_client_messages_parse() {
        let plain = parsed(b"n,,\x01auth=Bearer eyJ.e30.sig\x01\x01");
        assert_eq!(plain.token.expose(), "eyJ.e30.sig");
        assert_eq!((plain.authzid, plain.extensions), (None, vec![]));

        let full = parsed(b"n,a=svc=2Cx,\x01auth=bearer  t-_.9\x01logicalCluster=lkc-1\x01identityPoolId=pool 1\x01\x01");
        assert_eq!(full.token.expose(), "t-_.9");
        assert_eq!(full.authzid.as_deref(), Some("svc,x"));
        assert_eq!(
            full.extensions,
            vec![
                ("logicalCluster".to_string(), "lkc-1".to_string()),
                ("identityPoolId".to_string(), "pool 1".to_string())
            ]
        );
        // The token stays out of Debug output.
        assert!(!format!("{full:?}").contains("t-_.9"));
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        let why = |m: &[u8]| ClientInitialResponse::parse(m).unwrap_err();
        let cases: &[(&[u8], &str)] = &[
            (
                b"",
                "the GS2 header must start with \"n,\" (no channel binding)",
            ),
            (
                b"y,,\x01auth=Bearer t\x01\x01",
                "the GS2 header must start with \"n,\" (no channel binding)",
            ),
            (b"n,\x01auth=Bearer t\x01\x01", "the GS2 header has no end"),
            (
                b"n,u=x,\x01auth=Bearer t\x01\x01",
                "the GS2 header's authzid must be \"a=name\"",
            ),
            (
                b"n,a=x=41,\x01auth=Bearer t\x01\x01",
                "the authzid has an invalid escape",
            ),
            (
                b"n,,auth=Bearer t\x01\x01",
                "key=value pairs must start after \\x01 and end with \\x01",
            ),
            (
                b"n,,\x01auth=Bearer t\x01",
                "the last key=value pair is not ended by \\x01",
            ),
            (b"n,,\x01\x01", "'auth' not specified"),
            (
                b"n,,\x01auth=Basic dTpw\x01\x01",
                "the 'auth' scheme is not Bearer",
            ),
            (b"n,,\x01auth=Bearer\x01\x01", "invalid 'auth' format"),
            (b"n,,\x01auth=Bearer a b\x01\x01", "invalid 'auth' format"),
            (
                b"n,,\x01auth=Bearer a\x01auth=Bearer b\x01\x01",
                "auth appears twice",
            ),
            (
                b"n,,\x01auth=Bearer a\x01x=1\x01x=2\x01\x01",
                "extension x appears twice",
            ),
            (
                b"n,,\x01auth=Bearer a\x01x1=1\x01\x01",
                "a key=value pair is malformed",
            ),
            (
                b"n,,\x01auth=Bearer a\x01x=\x01\x01",
                "a key=value pair is malformed",
            ),
            (
                b"n,,\x01auth=Bearer a\x01novalue\x01\x01",
                "a pair has no '='",
            ),
            (b"n,,\x01auth=Bearer t\xc3\xa9\x01\x01", "not ASCII"),
        ];
        for (message, expected) in cases {
            assert_eq!(
                why(message),
                format!("Invalid OAUTHBEARER client first message: {expected}"),
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn built_messages_are_what_kafka_writes() {
        let token = || Secret::new("h.p.s");
        let plain = ClientInitialResponse::new(token(), None, vec![]).unwrap();
        assert_eq!(plain.to_bytes(), b"n,,\x01auth=Bearer h.p.s\x01\x01");
        let full = ClientInitialResponse::new(
            token(),
            Some("a,b".to_string()),
            vec![("logicalCluster".to_string(), "lkc-1".to_string())],
        )
        .unwrap();
        assert_eq!(
            full.to_bytes(),
            b"n,a=a=2Cb,\x01auth=Bearer h.p.s\x01logicalCluster=lkc-1\x01\x01"
        );
        assert_eq!(parsed(&full.to_bytes()), full);

        let refused = |t: &str, ext: (&str, &str)| {
            ClientInitialResponse::new(
                Secret::new(t),
                None,
                vec![(ext.0.to_string(), ext.1.to_string())],
            )
            .unwrap_err()
        };
        assert_eq!(
            refused("a b", ("k", "v")),
            "the token is empty or has characters a bearer token cannot have"
        );
        assert_eq!(
            refused("t", ("auth", "v")),
            "extension name \"auth\" is invalid"
        );
        assert_eq!(
            refused("t", ("k", "\x01")),
            "the value of extension k is invalid"
        );
    }

    #[test]
    fn error_status_round_trips() {
        let plain = error_response(INVALID_TOKEN, None, None);
        assert_eq!(plain, br#"{"status":"invalid_token"}"#);
        assert_eq!(
            parse_error_response(&plain),
            Some(ServerError {
                status: INVALID_TOKEN.to_string(),
                scope: None,
                openid_configuration: None
            })
        );
        let full = error_response(
            INVALID_TOKEN,
            Some("kafka \"rw\""),
            Some("https://idp/.well-known/openid-configuration"),
        );
        let read = parse_error_response(&full).unwrap();
        assert_eq!(read.scope.as_deref(), Some("kafka \"rw\""));
        assert_eq!(
            read.openid_configuration.as_deref(),
            Some("https://idp/.well-known/openid-configuration")
        );
        assert_eq!(parse_error_response(b""), None);
        assert_eq!(parse_error_response(br#"{"scope":"x"}"#), None);
        assert!(is_error_acknowledgement(ERROR_ACKNOWLEDGEMENT));
        assert!(!is_error_acknowledgement(b"\x01\x01"));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ClientInitialResponse::parse(&bytes);
            let _ = parse_error_response(&bytes);
        }

        #[test]
        fn near_valid_messages_never_panic(tail in "[ -~\\x01]{0,80}") {
            let _ = ClientInitialResponse::parse(format!("n,,\x01auth=Bearer t{tail}").as_bytes());
            let _ = ClientInitialResponse::parse(format!("n,a={tail}").as_bytes());
        }

        #[test]
        fn what_is_built_parses_back(
            token in "[-_.a-zA-Z0-9]{1,40}",
            authzid in proptest::option::of("[ -~]{1,20}"),
            extensions in proptest::collection::btree_map("[a-zA-Z]{1,8}", "[!-~][ -~]{0,10}", 0..4),
        ) {
            let extensions: Vec<(String, String)> =
                extensions.into_iter().filter(|(k, _)| k != "auth").collect();
            let built = ClientInitialResponse::new(Secret::new(token), authzid, extensions).unwrap();
            prop_assert_eq!(ClientInitialResponse::parse(&built.to_bytes()).unwrap(), built);
        }
    }
}
