//! Helpers shared by the configuration tests (and the rule tests in
//! `remap::rules`, which read best as the YAML a user writes).

use super::{parse_str, Config, ConfigError, LoadedConfig};

pub(crate) const MINIMAL: &str = "
listen:
  address: \"127.0.0.1:9092\"
kafka:
  bootstrap_servers: [\"localhost:19092\"]
";

/// An empty environment.
pub(crate) fn no_env(_: &str) -> Option<String> {
    None
}

pub(crate) fn parse(yaml: &str) -> Result<LoadedConfig, ConfigError> {
    parse_str(yaml, &no_env)
}

pub(crate) fn ok(yaml: &str) -> Config {
    match parse(yaml) {
        Ok(l) => l.config,
        Err(e) => panic!("expected the config to load, got:\n{e}"),
    }
}

/// The config's errors, one string each.
pub(crate) fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.errors().to_vec(),
    }
}

/// Asserts the config fails with exactly one error equal to `expected`.
pub(crate) fn assert_error(yaml: &str, expected: &str) {
    assert_eq!(errors(yaml), vec![expected.to_string()], "for:\n{yaml}");
}

/// MINIMAL with `extra` appended (top-level sections).
pub(crate) fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

/// MINIMAL with a `mapping` section of `body`.
pub(crate) fn mapping(body: &str) -> String {
    with(&format!("mapping:\n{body}"))
}

/// An environment holding only `vars`.
pub(crate) fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

/// A `listen` section of `body` and a minimal `kafka` one.
pub(crate) fn listen(body: &str) -> String {
    format!("listen:\n{body}kafka:\n  bootstrap_servers: [\"k:1\"]\n")
}
