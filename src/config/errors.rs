//! Why a configuration was refused, and how its messages name a field: the
//! dotted path from the top of the file (`listen.security.tls.cert_path`),
//! with `[i]` for list items and quotes around keys that are not plain words.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::remap::rules::key_segment;

/// Why a configuration was refused: every problem found, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: Option<PathBuf>,
    errors: Vec<String>,
}

impl ConfigError {
    pub(super) fn new(errors: Vec<String>) -> ConfigError {
        ConfigError { file: None, errors }
    }
    pub(super) fn in_file(mut self, file: &Path) -> ConfigError {
        self.file = Some(file.to_path_buf());
        self
    }
    /// The file the configuration came from, when loaded with [`load`].
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
    /// Each problem, one message each.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

/// `FILE: message`, or with several problems `FILE: N problems:` and one
/// indented line each.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match self.errors.as_slice() {
            [one] => f.write_str(one),
            many => {
                write!(f, "{} problems in the configuration:", many.len())?;
                for e in many {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A YAML key as text: strings as they are, numbers and booleans as written.
pub(super) fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The path of `key` inside the mapping at `path`.
pub(super) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key_segment(key)
    } else {
        format!("{path}.{}", key_segment(key))
    }
}

/// `path` as a message names it; the root has no path of its own.
pub(super) fn where_(path: &str) -> &str {
    if path.is_empty() {
        "top level"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load;
    use crate::config::test_support::parse;

    #[test]
    fn several_problems_are_all_reported() {
        let e = parse(
            "listen:\n  address: nope\n  max_connections: 0\nkafka:\n  bootstrap_servers: []\nlogging: { level: loud }\n",
        )
        .unwrap_err();
        assert_eq!(
            e.errors(),
            [
                "listen.address: \"nope\" is not host:port: missing \":port\"",
                "listen.max_connections: must be at least 1 (got 0)",
                "kafka.bootstrap_servers: must list at least one broker (host:port)",
                "logging.level: unknown log level \"loud\" (expected one of: error, warn, info, debug, trace)",
            ]
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with("4 problems in the configuration:\n  listen.address: "),
            "{shown}"
        );
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = std::env::temp_dir().join(format!("kpr-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.yaml");
        std::fs::write(&file, "listen:\n  adress: x\n").unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!(e.file(), Some(file.as_path()));
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!(
                "{}: 3 problems in the configuration:\n  unknown key \"adress\" at listen",
                file.display()
            )),
            "{shown}"
        );
        let missing = dir.join("missing.yaml");
        let shown = load(&missing).unwrap_err().to_string();
        assert!(
            shown.starts_with(&format!(
                "{}: cannot read the configuration file: ",
                missing.display()
            )),
            "{shown}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
