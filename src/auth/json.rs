//! The little JSON OAUTHBEARER needs: JWS headers and claims, JWKS files,
//! the RFC 7628 error status. JSON is read with serde_yaml, already a
//! dependency for the configuration (JSON is YAML 1.2's flow style), rather
//! than a new crate or a hand-written parser. Only a top-level object is
//! accepted, which keeps YAML's block syntax out; serde_yaml bounds nesting
//! depth and alias expansion, so hostile input costs an error, not memory.

use serde_yaml::{Mapping, Value};

/// `bytes` as a JSON object.
pub fn object(bytes: &[u8]) -> Result<Mapping, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    if !text.trim_start().starts_with('{') {
        return Err("not a JSON object".to_string());
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(Value::Mapping(m)) => Ok(m),
        Ok(_) | Err(_) => Err("not a JSON object".to_string()),
    }
}

/// The member `name` of `object`.
pub fn member<'a>(object: &'a Mapping, name: &str) -> Option<&'a Value> {
    object.get(name)
}

/// The string member `name`: `Ok(None)` when absent, an error naming it
/// when it is not a string.
pub fn string_member<'a>(object: &'a Mapping, name: &str) -> Result<Option<&'a str>, String> {
    match member(object, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

/// `text` as a JSON string literal, quotes included.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // JSON requires the C0 controls escaped; the rest are what
            // YAML, which reads JSON here, refuses raw (YAML 1.2 §5.1) or
            // reads as line breaks, folding the spaces before them
            // (U+2028, U+2029: YAML 1.1 §4.1.4, as the reader parses).
            c if (c as u32) < 0x20
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}') =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_as_identity_providers_write_it() {
        let m = object(br#"{"alg":"RS256","kid":"k-1","n":1700000000,"aud":["a","b"],"x":{"y":null},"esc":"a\/b\u00e9\"q"}"#).unwrap();
        assert_eq!(string_member(&m, "alg"), Ok(Some("RS256")));
        assert_eq!(string_member(&m, "kid"), Ok(Some("k-1")));
        assert_eq!(member(&m, "n").and_then(Value::as_u64), Some(1_700_000_000));
        assert_eq!(string_member(&m, "esc"), Ok(Some("a/b\u{e9}\"q")));
        assert_eq!(string_member(&m, "absent"), Ok(None));
        assert_eq!(
            string_member(&m, "aud"),
            Err("\"aud\" is not a string".to_string())
        );
    }

    #[test]
    fn only_objects_are_accepted() {
        for bad in [
            &b"[1]"[..],
            b"\"s\"",
            b"alg: RS256",
            b"{",
            b"{\"a\":",
            b"\xff",
            b"",
            b"{\"a\":1,\"a\":2}",
        ] {
            assert!(object(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn alias_bombs_are_refused() {
        let bomb = br#"{"a": &a ["x","x","x","x","x","x","x","x","x"], "b": &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "c": &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "d": &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], "e": &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], "f": [*e,*e,*e,*e,*e,*e,*e,*e,*e]}"#;
        assert!(object(bomb).is_err());
    }

    #[test]
    fn quoting_escapes_what_json_requires() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        let m = object(format!("{{\"k\":{}}}", quote("x\"\u{1}y")).as_bytes()).unwrap();
        assert_eq!(string_member(&m, "k"), Ok(Some("x\"\u{1}y")));
    }

    /// Found by the `auth` fuzz target (10M-run, 2026-12-03): a space
    /// before U+2028 in an error challenge's status was dropped on the way
    /// back, the reader folding it as a line break.
    #[test]
    fn quoted_line_separators_read_back() {
        for text in ["0 \u{2028}0", "a\t\u{2029}b", "\u{2028}"] {
            let m = object(format!("{{\"k\":{}}}", quote(text)).as_bytes()).unwrap();
            assert_eq!(string_member(&m, "k"), Ok(Some(text)));
        }
    }

    /// Found by the `auth` fuzz target: a DEL in an error challenge's
    /// status made the proxy's own challenge unreadable by its reader.
    /// JSON allows DEL and the C1 controls raw; YAML, which reads it here,
    /// does not (YAML 1.2 §5.1), so they are written escaped.
    #[test]
    fn quoted_controls_read_back() {
        for text in ["\u{7f}", "a\u{80}b", "\u{85}", "\u{9f}", "\u{feff}x", "\u{fffe}"] {
            let m = object(format!("{{\"k\":{}}}", quote(text)).as_bytes())
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(string_member(&m, "k"), Ok(Some(text)));
        }
    }
}
