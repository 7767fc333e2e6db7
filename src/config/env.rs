//! `${VAR}` expansion. It runs on the parsed YAML tree, string scalars only,
//! so a value from the environment is never read as YAML (quotes, colons and
//! `${` in it stay literal). It records which paths were substituted, since
//! a number or boolean may then arrive as a string, and which failed, so the
//! decoder does not report those a second time.

use std::collections::HashSet;

use serde_yaml::Value;

use super::errors::{child, key_text, where_};

/// What expanding a tree found.
#[derive(Debug, Default)]
pub(super) struct Expansion {
    /// Paths of strings produced by `${VAR}` substitution: numbers and
    /// booleans may come from the environment.
    pub(super) substituted: HashSet<String>,
    /// Paths whose expansion failed (reported in `errors`; not reported
    /// again as a type error).
    pub(super) failed: HashSet<String>,
    pub(super) errors: Vec<String>,
}

/// Expands every string scalar under `v` (at `path`) in place.
pub(super) fn expand_tree(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    found: &mut Expansion,
) {
    match v {
        Value::String(s) => {
            if s.contains('$') {
                match expand_vars(s, env) {
                    Ok((new, substituted)) => {
                        *s = new;
                        if substituted {
                            found.substituted.insert(path.to_string());
                        }
                    }
                    Err(e) => {
                        found.failed.insert(path.to_string());
                        found.errors.push(format!("{}: {e}", where_(path)));
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &format!("{path}[{i}]"), env, found);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = key_text(k).unwrap_or_else(|| "?".to_string());
                expand_tree(item, &child(path, &key), env, found);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, path, env, found),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Expands `${NAME}` from `env`; `$${` is a literal `${`. Returns the new
/// text and whether a variable was substituted.
fn expand_vars(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(s.len());
    let mut substituted = false;
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err("unterminated \"${\" (write \"$${\" for a literal \"${\")".to_string());
            };
            let name = &after[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "\"${{{name}}}\" is not a valid environment variable reference \
                     (names are letters, digits and _; write \"$${{\" for a literal \"${{\")"
                ));
            }
            match env(name) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("environment variable {name} is not set")),
            }
            substituted = true;
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok((out, substituted))
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;
    use crate::config::test_support::{assert_error, env_of, errors, no_env, with};
    use crate::config::{SaslMechanism, SaslUser, Secret};

    #[test]
    fn env_vars_expand_in_string_values() {
        let yaml = "
listen:
  address: \"${HOST}:${PORT}\"
kafka:
  bootstrap_servers: [\"${BROKER}\"]
  connection_timeout_ms: ${TIMEOUT}
metrics:
  enabled: ${METRICS}
";
        let env = env_of(&[
            ("HOST", "127.0.0.1"),
            ("PORT", "9094"),
            ("BROKER", "b1:9092"),
            ("TIMEOUT", "1234"),
            ("METRICS", "true"),
        ]);
        let c = parse_str(yaml, &env).unwrap().config;
        assert_eq!(c.listen.address, "127.0.0.1:9094");
        assert_eq!(c.kafka.bootstrap_servers, vec!["b1:9092"]);
        assert_eq!(c.kafka.connection_timeout_ms, 1234);
        assert!(c.metrics.enabled);
    }

    #[test]
    fn env_values_are_not_yaml() {
        // Expansion happens after parsing: quotes, colons, "${" in the value stay literal.
        let yaml = "
listen:
  address: 127.0.0.1:9092
  security:
    protocol: SASL_PLAINTEXT
    sasl:
      enabled_mechanisms: [PLAIN]
      credentials:
        users:
          alice: \"${PW}\"
kafka:
  bootstrap_servers: [\"k:1\"]
";
        let env = env_of(&[("PW", "p\"w: ${NOT_EXPANDED} \\n'")]);
        let c = parse_str(yaml, &env).unwrap().config;
        let sasl = c.listen.security.sasl.unwrap();
        assert_eq!(
            sasl.users,
            vec![SaslUser {
                name: "alice".into(),
                password: Secret::new("p\"w: ${NOT_EXPANDED} \\n'")
            }]
        );
        assert_eq!(sasl.enabled_mechanisms, vec![SaslMechanism::Plain]);
    }

    #[test]
    fn double_dollar_escapes_expansion() {
        let yaml = "
listen:
  address: 127.0.0.1:9092
kafka:
  bootstrap_servers: [\"k:1\"]
  sasl: { mechanism: PLAIN, username: \"u$${HOME}$$x$\", password: \"$${A}${A}\" }
  security_protocol: SASL_PLAINTEXT
";
        let c = parse_str(yaml, &env_of(&[("A", "1")])).unwrap().config;
        let sasl = c.kafka.sasl.unwrap();
        assert_eq!(sasl.username, "u${HOME}$$x$");
        assert_eq!(sasl.password.expose(), "${A}1");
    }

    #[test]
    fn unset_env_var_names_variable_and_path() {
        let yaml = "
listen:
  address: 127.0.0.1:9092
kafka:
  bootstrap_servers: [\"k:1\", \"${BROKER2}\"]
  connection_timeout_ms: ${TIMEOUT}
";
        let e = parse_str(yaml, &no_env).unwrap_err();
        assert_eq!(
            e.errors(),
            [
                "kafka.bootstrap_servers[1]: environment variable BROKER2 is not set",
                "kafka.connection_timeout_ms: environment variable TIMEOUT is not set",
            ]
        );
    }

    #[test]
    fn malformed_env_references() {
        let e = errors(&with("logging: { level: \"${LEVEL\" }\n"));
        assert_eq!(
            e,
            vec!["logging.level: unterminated \"${\" (write \"$${\" for a literal \"${\")"]
        );
        let e = errors(&with("logging: { level: \"${1X}\" }\n"));
        assert!(
            e.len() == 1
                && e[0].starts_with(
                    "logging.level: \"${1X}\" is not a valid environment variable reference"
                ),
            "{e:?}"
        );
    }

    #[test]
    fn env_number_must_be_a_number() {
        let yaml = with("metrics: { enabled: false }\nlogging: { level: info }\n")
            .replace("kafka:\n", "kafka:\n  request_timeout_ms: ${T}\n");
        let e = parse_str(&yaml, &env_of(&[("T", "soon")])).unwrap_err();
        assert_eq!(e.errors(), ["kafka.request_timeout_ms: expected a whole number, got \"soon\" from the environment"]);
    }

    #[test]
    fn quoted_number_without_env_is_a_type_error() {
        assert_error(
            &with("").replace("kafka:\n", "kafka:\n  request_timeout_ms: \"100\"\n"),
            "kafka.request_timeout_ms: expected a whole number, got a string",
        );
    }
}
