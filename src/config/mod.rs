//! The YAML configuration: how it is loaded, and the types the rest of the
//! proxy reads.
//!
//! Loading goes YAML text → `serde_yaml::Value` (merge keys applied) →
//! `${VAR}` expansion on string scalars (`env`) → a hand-written decoder
//! that knows every section's keys (`decode`) → the validated [`Config`]
//! (`model`), whose `mapping` holds the rules `remap::rules` applies at run
//! time. Decoding by hand (rather than `#[derive(Deserialize)]`) is what
//! lets every error name the full path of the field and the rule it breaks
//! (`errors`), and lets one run report all problems at once: serde_yaml's
//! errors from a `Value` carry no path, and its errors from text point at
//! lines of the unexpanded file.

mod addresses;
mod decode;
mod env;
mod errors;
mod host_name;
mod model;
#[cfg(test)]
pub(crate) mod test_support;

use std::path::Path;

use serde_yaml::Value;

use decode::Decoder;
use env::{expand_tree, Expansion};

pub use addresses::split_host_port;
pub use errors::ConfigError;
pub use model::*;
/// `Config::mapping` holds the rules; they live in `remap::rules`.
pub use crate::remap::rules::{MappingRules, Rule, RuleSource};

/// Reads, expands (from the process environment) and validates a configuration file.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(vec![format!("cannot read the configuration file: {e}")]).in_file(path)
    })?;
    parse_str(&text, &|name| std::env::var(name).ok()).map_err(|e| e.in_file(path))
}

/// Parses and validates configuration text; `env` looks up `${VAR}` values.
pub fn parse_str(
    yaml: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigError> {
    let mut root: Value = serde_yaml::from_str(yaml)
        .map_err(|e| ConfigError::new(vec![format!("invalid YAML: {e}")]))?;
    root.apply_merge()
        .map_err(|e| ConfigError::new(vec![format!("invalid YAML merge (<<): {e}")]))?;
    let mut expansion = Expansion::default();
    expand_tree(&mut root, "", env, &mut expansion);
    let mut d = Decoder::new(expansion);
    let config = d.config(&root);
    match config {
        Some(config) if d.errors.is_empty() => Ok(LoadedConfig {
            config,
            warnings: d.warnings,
        }),
        _ => {
            if d.errors.is_empty() {
                d.errors.push("invalid configuration".to_string()); // not reached: None comes with an error
            }
            Err(ConfigError::new(d.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use log::LevelFilter;

    use super::parse_str;
    use super::test_support::{env_of, errors, mapping, ok};

    #[test]
    fn invalid_yaml_is_reported() {
        let e = errors("listen: [\n");
        assert!(e.len() == 1 && e[0].starts_with("invalid YAML: "), "{e:?}");
        let e = errors(
            "listen:\n  address: a:1\n  address: b:2\nkafka:\n  bootstrap_servers: [\"k:1\"]\n",
        );
        assert!(e.len() == 1 && e[0].contains("duplicate"), "{e:?}");
    }

    #[test]
    fn yaml_merge_keys_work() {
        let c = ok(&mapping(
            "  topics:\n    a: &r { virtual_partitions: 20, physical_partitions: 2 }\n    b: { <<: *r }\n",
        ));
        assert_eq!(c.mapping.rule_for("b").unwrap().virtual_partitions, 20);
    }

    #[test]
    fn every_example_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let env = env_of(&[
            ("APP_USER_PASSWORD", "a"),
            ("ADMIN_USER_PASSWORD", "b"),
            ("KAFKA_PASSWORD", "c"),
        ]);
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(e) = parse_str(&text, &env) {
                    panic!("{}: {e}", path.display());
                }
                seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "dev.yaml",
                "kpr-proxy.yaml",
                "per-topic.yaml",
                "production-sasl-tls.yaml"
            ]
        );
    }

    #[test]
    fn examples_mean_what_their_comments_say() {
        let read = |name: &str| {
            let env = env_of(&[
                ("APP_USER_PASSWORD", "a"),
                ("ADMIN_USER_PASSWORD", "b"),
                ("KAFKA_PASSWORD", "c"),
            ]);
            let text = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("config")
                    .join(name),
            )
            .unwrap();
            parse_str(&text, &env).unwrap().config
        };
        let per_topic = read("per-topic.yaml");
        assert_eq!(per_topic.mapping.rule_for("events").unwrap().ratio(), 50);
        assert!(per_topic
            .mapping
            .rule_for("config")
            .unwrap()
            .is_passthrough());
        assert_eq!(
            per_topic
                .mapping
                .rule_for("audit.login")
                .unwrap()
                .virtual_partitions,
            50
        );
        assert_eq!(
            per_topic
                .mapping
                .rule_for("orders")
                .unwrap()
                .virtual_partitions,
            100
        );

        let prod = read("production-sasl-tls.yaml");
        // TLS and SASL are carried out on both sides.
        assert!(prod.unsupported_features().is_empty(), "{:?}", prod.unsupported_features());
        let users = &prod.listen.security.sasl.as_ref().unwrap().users;
        assert_eq!(users[0].password.expose(), "a");
        assert_eq!(prod.kafka.sasl.as_ref().unwrap().password.expose(), "c");

        for name in ["kpr-proxy.yaml", "dev.yaml", "per-topic.yaml"] {
            assert!(
                read(name).unsupported_features().is_empty(),
                "{name} must start"
            );
        }
        assert_eq!(read("dev.yaml").logging.level, LevelFilter::Debug);
    }
}
