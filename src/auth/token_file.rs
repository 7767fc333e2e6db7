//! The bearer token the proxy presents to the brokers with OAUTHBEARER
//! (`kafka.sasl.token_path`), as Kafka's file token retriever reads one: the
//! whole file, surrounding whitespace stripped. Whatever renews the token
//! (a sidecar, a cron job) rewrites the file; the next authentication
//! reads the new token, without a restart.
//!
//! An unusable file (empty, unreadable, not a token) is an error on every
//! call until it is fixed, rather than a silent fall-back to the previous
//! token, which is most likely expired by then.

use std::path::Path;

use parking_lot::Mutex;

use super::oauthbearer::is_token;
use super::watched_file::WatchedFile;
use crate::config::Secret;

/// A token file and what its current version holds.
#[derive(Debug)]
pub struct TokenFile {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    watched: WatchedFile,
    current: Result<Secret, String>,
}

impl TokenFile {
    /// Reads the file; an error here stops the proxy from starting.
    pub fn load(path: &Path) -> Result<TokenFile, String> {
        let file = TokenFile {
            state: Mutex::new(State {
                watched: WatchedFile::new(path),
                current: Err(String::new()),
            }),
        };
        file.token()?;
        Ok(file)
    }

    /// The token, re-read first if the file changed (one `stat` when not).
    pub fn token(&self) -> Result<Secret, String> {
        let mut state = self.state.lock();
        let source = state.watched.path().display().to_string();
        match state.watched.read_if_changed() {
            Ok(Some(bytes)) => state.current = token_of(&bytes, &source),
            Ok(None) => {}
            Err(e) => return Err(format!("token file {source}: {e}")),
        }
        state.current.clone()
    }
}

fn token_of(bytes: &[u8], source: &str) -> Result<Secret, String> {
    let text = std::str::from_utf8(bytes).unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Err(format!("token file {source} is empty"));
    }
    if !is_token(text) {
        return Err(format!(
            "token file {source} does not hold a bearer token (base64url characters and dots)"
        ));
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::watched_file::tests::{write_at, TempDir};

    #[test]
    fn the_token_is_trimmed_and_re_read_when_the_file_changes() {
        let dir = TempDir::new("token");
        let path = dir.0.join("token");
        write_at(&path, b"  aaa.bbb.ccc\n", 0);
        let file = TokenFile::load(&path).unwrap();
        assert_eq!(file.token().unwrap().expose(), "aaa.bbb.ccc");
        write_at(&path, b"ddd.eee.fff\n", 1);
        assert_eq!(file.token().unwrap().expose(), "ddd.eee.fff");
        assert!(
            !format!("{file:?}").contains("ddd"),
            "Debug hides the token"
        );
    }

    #[test]
    fn an_unusable_file_is_an_error_until_fixed() {
        let dir = TempDir::new("token-bad");
        let path = dir.0.join("token");
        let shown = path.display().to_string();
        assert!(TokenFile::load(&path)
            .unwrap_err()
            .starts_with(&format!("token file {shown}: ")));
        write_at(&path, b" \n", 0);
        assert_eq!(
            TokenFile::load(&path).unwrap_err(),
            format!("token file {shown} is empty")
        );

        write_at(&path, b"good.token", 1);
        let file = TokenFile::load(&path).unwrap();
        write_at(&path, b"Bearer secret-ish value", 2);
        let not_a_token = format!(
            "token file {shown} does not hold a bearer token (base64url characters and dots)"
        );
        assert_eq!(file.token().unwrap_err(), not_a_token);
        assert_eq!(
            file.token().unwrap_err(),
            not_a_token,
            "still refused, not the old token"
        );
        write_at(&path, b"next.token", 3);
        assert_eq!(file.token().unwrap().expose(), "next.token");
        std::fs::remove_file(&path).unwrap();
        assert!(file.token().unwrap_err().contains("No such file"));
    }
}
