//! The command line. Flags are data: [`FLAGS`] feeds parsing, [`help_text`]
//! and [`man_page_flags_missing`] (the check that `man/kpr-proxy.1`
//! documents every flag).
//!
//! Parsing is syntax only ([`parse_args`] does no I/O); `main` then loads the
//! configuration named by [`RunArgs::config_path`]. `--help` and `--version`
//! win over everything else on the line, errors included.
//!
//! # Exit status
//!
//! | code | constant                  | meaning                                              |
//! |------|---------------------------|------------------------------------------------------|
//! | 0    | [`EXIT_OK`]               | success, or clean shutdown after SIGTERM/SIGINT      |
//! | 1    | [`EXIT_FAILURE`]          | runtime failure (e.g. cannot bind the listen address)|
//! | 2    | [`EXIT_USAGE`]            | usage error: bad command line                        |
//! | 3    | [`EXIT_CONFIG`]           | invalid configuration (or one this version refuses)  |
//! | 4    | [`EXIT_KAFKA_UNREACHABLE`]| the Kafka cluster was unreachable at start           |
//!
//! Errors are printed by `main` once, as `kpr-proxy: <message>`.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// Success, or a clean shutdown.
pub const EXIT_OK: i32 = 0;
/// A failure while running (after the configuration was accepted).
pub const EXIT_FAILURE: i32 = 1;
/// The command line is wrong.
pub const EXIT_USAGE: i32 = 2;
/// The configuration file is missing, unreadable or invalid, or asks for
/// something this version does not implement.
pub const EXIT_CONFIG: i32 = 3;
/// No bootstrap server of the Kafka cluster could be reached at start.
pub const EXIT_KAFKA_UNREACHABLE: i32 = 4;

/// Every exit status with its meaning, for `--help` and the man page.
pub const EXIT_CODES: &[(i32, &str)] = &[
    (EXIT_OK, "success, or clean shutdown"),
    (EXIT_FAILURE, "runtime failure"),
    (EXIT_USAGE, "usage error (bad command line)"),
    (
        EXIT_CONFIG,
        "invalid configuration, or a feature this version does not implement",
    ),
    (EXIT_KAFKA_UNREACHABLE, "Kafka cluster unreachable at start"),
];

/// The program name, as prefixed to error messages.
pub const PROGRAM: &str = "kpr-proxy";

/// One line of usage, printed after a usage error.
pub const USAGE: &str =
    "usage: kpr-proxy -c FILE [-v | -vv] [--check-config [--offline]]  (kpr-proxy --help for more)";

/// What a flag does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Config,
    Verbose,
    CheckConfig,
    Offline,
    Version,
    Help,
}

/// One command-line flag.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// `-c` (with the dash), if the flag has a short form.
    pub short: Option<&'static str>,
    /// `--config` (with the dashes), if the flag has a long form.
    pub long: Option<&'static str>,
    /// The value's placeholder (`FILE`) when the flag takes a value.
    pub value_name: Option<&'static str>,
    pub kind: FlagKind,
    pub help: &'static str,
}

impl Flag {
    /// `-c, --config FILE`, `    --check-config`: the left column of `--help`.
    pub fn synopsis(&self) -> String {
        let mut s = match (self.short, self.long) {
            (Some(short), Some(long)) => format!("{short}, {long}"),
            (Some(short), None) => short.to_string(),
            (None, Some(long)) => format!("    {long}"),
            (None, None) => String::new(),
        };
        if let Some(v) = self.value_name {
            s.push(' ');
            s.push_str(v);
        }
        s
    }

    /// `-c/--config`: how errors name the flag.
    pub fn name(&self) -> String {
        match (self.short, self.long) {
            (Some(s), Some(l)) => format!("{s}/{l}"),
            (Some(s), None) => s.to_string(),
            (None, Some(l)) => l.to_string(),
            (None, None) => String::new(),
        }
    }

    fn takes_value(&self) -> bool {
        self.value_name.is_some()
    }
}

/// Every flag kpr-proxy accepts.
pub const FLAGS: &[Flag] = &[
    Flag {
        short: Some("-c"),
        long: Some("--config"),
        value_name: Some("FILE"),
        kind: FlagKind::Config,
        help: "Configuration file (YAML). Required, except with --help or --version.",
    },
    Flag {
        short: Some("-v"),
        long: None,
        value_name: None,
        kind: FlagKind::Verbose,
        help: "Log more: -v logs at debug level, -vv (or -v -v) at trace level. \
               Raises logging.level from the configuration.",
    },
    Flag {
        short: None,
        long: Some("--check-config"),
        value_name: None,
        kind: FlagKind::CheckConfig,
        help: "Validate the configuration and print the mapping rules; then connect to the \
               cluster (with the configured security) and print the rule each existing topic falls \
               under, flagging topics whose physical partition count contradicts their rule. Exit \
               status 0 if valid, 3 if the configuration is invalid, 4 if the cluster cannot be \
               reached or refuses the login (the step that failed is named).",
    },
    Flag {
        short: None,
        long: Some("--offline"),
        value_name: None,
        kind: FlagKind::Offline,
        help: "With --check-config: stop after the file checks (decoding, validation, reading the \
               certificate, key, JWKS and token files) without contacting the cluster, so that a \
               cluster outage cannot fail a service (re)start. Exit status 0 or 3.",
    },
    Flag {
        short: Some("-V"),
        long: Some("--version"),
        value_name: None,
        kind: FlagKind::Version,
        help: "Print the version and exit.",
    },
    Flag {
        short: Some("-h"),
        long: Some("--help"),
        value_name: None,
        kind: FlagKind::Help,
        help: "Print this help and exit.",
    },
];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    /// Run the proxy.
    Run(RunArgs),
    /// Validate the configuration, print the mapping, exit.
    CheckConfig(RunArgs, CheckScope),
}

/// How far `--check-config` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckScope {
    /// The file and the files it names, then the cluster's topics.
    WithCluster,
    /// `--offline`: the file and the files it names only.
    Offline,
}

/// The arguments of a run (or of `--check-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    pub config_path: PathBuf,
    /// How many `-v`: 0 keeps the configured level, 1 debug, 2 or more trace
    /// (see [`crate::logging::effective_level`]).
    pub verbosity: u8,
}

/// A command-line error; `main` prints it as `kpr-proxy: <message>` followed
/// by [`USAGE`] and exits with [`EXIT_USAGE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    message: String,
}

impl UsageError {
    fn new(message: impl Into<String>) -> UsageError {
        UsageError {
            message: message.into(),
        }
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UsageError {}

fn flag_by_long(long: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| f.long == Some(long))
}

fn flag_by_short(c: char) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| {
        f.short
            .and_then(|s| s.strip_prefix('-'))
            .is_some_and(|s| s.chars().eq([c]))
    })
}

#[derive(Default)]
struct Seen {
    help: bool,
    version: bool,
    check: bool,
    offline: bool,
    verbosity: u8,
    config: Option<PathBuf>,
    /// The first problem; parsing goes on so `--help` anywhere still wins.
    error: Option<UsageError>,
}

impl Seen {
    fn fail(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(UsageError::new(message));
        }
    }

    fn apply(&mut self, flag: &Flag, value: Option<OsString>) {
        match flag.kind {
            FlagKind::Help => self.help = true,
            FlagKind::Version => self.version = true,
            FlagKind::CheckConfig => self.check = true,
            FlagKind::Offline => self.offline = true,
            FlagKind::Verbose => self.verbosity = self.verbosity.saturating_add(1),
            FlagKind::Config => {
                let value = value.unwrap_or_default();
                if value.is_empty() {
                    self.fail(format!("{} needs a file name", flag.name()));
                } else if self.config.is_some() {
                    self.fail(format!("{} is given more than once", flag.name()));
                } else {
                    self.config = Some(PathBuf::from(value));
                }
            }
        }
    }
}

/// Parses the arguments after the program name (`std::env::args_os().skip(1)`).
///
/// Accepted forms: `--config FILE`, `--config=FILE`, `-c FILE`, `-cFILE`,
/// short flags grouped (`-vv`, `-vc FILE`). A value may not start with `-`
/// when given as a separate argument (`-c -v` is an error, not a file named
/// `-v`); write `--config=-v` for that.
pub fn parse_args(args: Vec<OsString>) -> Result<Command, UsageError> {
    let mut seen = Seen::default();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let Some(s) = arg.to_str() else {
            seen.fail(format!("unexpected argument {:?}", arg.to_string_lossy()));
            continue;
        };
        if let Some(long) = s.strip_prefix("--").filter(|l| !l.is_empty()) {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(OsString::from(v))),
                None => (s.to_string(), None),
            };
            let Some(flag) = flag_by_long(&name) else {
                seen.fail(format!("unknown flag {name}"));
                continue;
            };
            if flag.takes_value() {
                let value = inline.or_else(|| next_value(&mut args));
                if value.is_none() {
                    seen.fail(format!(
                        "{} needs a value ({})",
                        flag.name(),
                        flag.value_name.unwrap_or("")
                    ));
                    continue;
                }
                seen.apply(flag, value);
            } else if inline.is_some() {
                seen.fail(format!("{name} takes no value"));
            } else {
                seen.apply(flag, None);
            }
        } else if let Some(cluster) = s
            .strip_prefix('-')
            .filter(|c| !c.is_empty() && !c.starts_with('-'))
        {
            for (i, c) in cluster.char_indices() {
                let Some(flag) = flag_by_short(c) else {
                    if cluster.len() == c.len_utf8() {
                        seen.fail(format!("unknown flag -{c}"));
                    } else {
                        seen.fail(format!("unknown flag -{c} (in {s})"));
                    }
                    break;
                };
                if flag.takes_value() {
                    let rest = &cluster[i + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        next_value(&mut args)
                    } else {
                        Some(OsString::from(rest))
                    };
                    if value.is_none() {
                        seen.fail(format!(
                            "{} needs a value ({})",
                            flag.name(),
                            flag.value_name.unwrap_or("")
                        ));
                    } else {
                        seen.apply(flag, value);
                    }
                    break;
                }
                seen.apply(flag, None);
            }
        } else {
            seen.fail(format!(
                "unexpected argument {s:?} (the configuration file is given with -c FILE)"
            ));
        }
    }
    if seen.help {
        return Ok(Command::Help);
    }
    if seen.version {
        return Ok(Command::Version);
    }
    if let Some(e) = seen.error {
        return Err(e);
    }
    if seen.offline && !seen.check {
        return Err(UsageError::new("--offline is only meaningful with --check-config"));
    }
    let Some(config_path) = seen.config else {
        return Err(UsageError::new(
            "missing -c/--config FILE: the configuration file is required",
        ));
    };
    let run = RunArgs {
        config_path,
        verbosity: seen.verbosity,
    };
    Ok(if seen.check {
        let scope = if seen.offline { CheckScope::Offline } else { CheckScope::WithCluster };
        Command::CheckConfig(run, scope)
    } else {
        Command::Run(run)
    })
}

/// The next argument as a flag's value, unless it looks like a flag itself.
fn next_value(args: &mut std::iter::Peekable<std::vec::IntoIter<OsString>>) -> Option<OsString> {
    let looks_like_flag = args.peek().is_some_and(|a| {
        a.to_str()
            .is_some_and(|s| s.len() > 1 && s.starts_with('-'))
    });
    if looks_like_flag {
        None
    } else {
        args.next()
    }
}

/// `kpr-proxy 0.1.0`, plus ` (rev abc1234)` when built with `KPR_GIT_REV` set.
pub fn version_text() -> String {
    let mut s = format!("{PROGRAM} {}", env!("CARGO_PKG_VERSION"));
    if let Some(rev) = option_env!("KPR_GIT_REV").filter(|r| !r.trim().is_empty()) {
        s.push_str(&format!(" (rev {})", rev.trim()));
    }
    s
}

/// The `--help` text, built from [`FLAGS`] and [`EXIT_CODES`].
pub fn help_text() -> String {
    const WIDTH: usize = 80;
    let mut out = String::new();
    out.push_str(&version_text());
    out.push('\n');
    out.push_str(env!("CARGO_PKG_DESCRIPTION"));
    out.push_str("\n\nUSAGE:\n    kpr-proxy -c FILE [-v | -vv] [--check-config [--offline]]\n    kpr-proxy --help | --version\n\nOPTIONS:\n");
    let left = FLAGS.iter().map(|f| f.synopsis().len()).max().unwrap_or(0) + 4 + 3;
    for flag in FLAGS {
        let head = format!("    {}", flag.synopsis());
        push_wrapped(&mut out, &head, left, flag.help, WIDTH);
    }
    out.push_str("\nEXIT STATUS:\n");
    for (code, meaning) in EXIT_CODES {
        push_wrapped(&mut out, &format!("    {code}"), 9, meaning, WIDTH);
    }
    out.push_str("\nSee kpr-proxy(1) for the configuration file.\n");
    out
}

/// `head` padded to `indent`, then `text` word-wrapped at `width` with
/// continuation lines indented by `indent`.
fn push_wrapped(out: &mut String, head: &str, indent: usize, text: &str, width: usize) {
    let mut line = format!("{head:indent$}");
    if line.len() > indent {
        line.push(' ');
    }
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = " ".repeat(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The short and long flags of [`FLAGS`] that `man_text` never mentions.
/// roff is read loosely: `\-` and `\(hy` are `-`, font changes (`\fB`,
/// `\fI`, `\fR`, `\fP`, `\f(XX`, `\f[X]`) and `\&` are dropped. A flag must
/// stand alone: `-c` inside `--check-config` does not count.
pub fn man_page_flags_missing(man_text: &str) -> Vec<&'static str> {
    let text = strip_roff(man_text);
    FLAGS
        .iter()
        .flat_map(|f| f.short.into_iter().chain(f.long))
        .filter(|name| !mentions(&text, name))
        .collect()
}

fn strip_roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let esc = &rest[i + 1..];
        let skip = if esc.starts_with('-') {
            out.push('-');
            1
        } else if esc.starts_with("(hy") {
            out.push('-');
            3
        } else if esc.starts_with('&') {
            1
        } else if let Some(font) = esc.strip_prefix('f') {
            if font.starts_with('(') {
                1 + font.chars().take(3).map(char::len_utf8).sum::<usize>()
            } else if font.starts_with('[') {
                1 + font.find(']').map_or(font.len(), |j| j + 1)
            } else {
                1 + font.chars().next().map_or(0, char::len_utf8)
            }
        } else {
            out.push('\\');
            0
        };
        rest = &esc[skip..];
    }
    out.push_str(rest);
    out
}

fn mentions(text: &str, flag: &str) -> bool {
    let part_of_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(flag).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + flag.len()..].chars().next();
        !before.is_some_and(part_of_word) && !after.is_some_and(part_of_word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        parse_args(args.iter().map(OsString::from).collect())
    }

    fn run(path: &str, verbosity: u8) -> Command {
        Command::Run(RunArgs {
            config_path: PathBuf::from(path),
            verbosity,
        })
    }

    fn err(args: &[&str]) -> String {
        match parse(args) {
            Err(e) => e.to_string(),
            Ok(c) => panic!("expected an error for {args:?}, got {c:?}"),
        }
    }

    #[test]
    fn flag_table_is_consistent() {
        let mut names = Vec::new();
        for f in FLAGS {
            assert!(f.short.is_some() || f.long.is_some());
            if let Some(s) = f.short {
                assert!(s.len() == 2 && s.starts_with('-'), "{s}");
                names.push(s);
            }
            if let Some(l) = f.long {
                assert!(l.starts_with("--") && l.len() > 3, "{l}");
                names.push(l);
            }
            assert!(!f.help.is_empty());
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate flag names: {names:?}");
        for kind in [
            FlagKind::Config,
            FlagKind::Verbose,
            FlagKind::CheckConfig,
            FlagKind::Offline,
            FlagKind::Version,
            FlagKind::Help,
        ] {
            assert_eq!(
                FLAGS.iter().filter(|f| f.kind == kind).count(),
                1,
                "{kind:?}"
            );
        }
    }

    // -c, --config FILE
    #[test]
    fn config_flag() {
        assert_eq!(parse(&["-c", "a.yaml"]), Ok(run("a.yaml", 0)));
        assert_eq!(parse(&["--config", "a.yaml"]), Ok(run("a.yaml", 0)));
        assert_eq!(parse(&["--config=a.yaml"]), Ok(run("a.yaml", 0)));
        assert_eq!(parse(&["-ca.yaml"]), Ok(run("a.yaml", 0)));
        assert_eq!(parse(&["--config=-odd"]), Ok(run("-odd", 0)));
        assert_eq!(parse(&["-c", "-"]), Ok(run("-", 0)), "a lone - is a value");
        assert_eq!(
            err(&[]),
            "missing -c/--config FILE: the configuration file is required"
        );
        assert_eq!(
            err(&["-v"]),
            "missing -c/--config FILE: the configuration file is required"
        );
        assert_eq!(err(&["-c"]), "-c/--config needs a value (FILE)");
        assert_eq!(err(&["--config"]), "-c/--config needs a value (FILE)");
        assert_eq!(err(&["-c", "-v"]), "-c/--config needs a value (FILE)");
        assert_eq!(err(&["--config="]), "-c/--config needs a file name");
        assert_eq!(
            err(&["-c", "a", "--config", "b"]),
            "-c/--config is given more than once"
        );
    }

    #[cfg(unix)]
    #[test]
    fn config_path_may_be_non_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let path = OsString::from_vec(vec![b'c', 0xff, b'.', b'y']);
        let cmd = parse_args(vec![OsString::from("-c"), path.clone()]).unwrap();
        assert_eq!(
            cmd,
            Command::Run(RunArgs {
                config_path: PathBuf::from(path),
                verbosity: 0
            })
        );
    }

    // -v, -vv
    #[test]
    fn verbose_flag() {
        assert_eq!(parse(&["-c", "f", "-v"]), Ok(run("f", 1)));
        assert_eq!(parse(&["-v", "-c", "f"]), Ok(run("f", 1)));
        assert_eq!(parse(&["-vv", "-c", "f"]), Ok(run("f", 2)));
        assert_eq!(parse(&["-v", "-c", "f", "-v"]), Ok(run("f", 2)));
        assert_eq!(parse(&["-vvv", "-c", "f"]), Ok(run("f", 3)));
        assert_eq!(
            parse(&["-vc", "f"]),
            Ok(run("f", 1)),
            "grouped with a value flag last"
        );
        assert_eq!(err(&["-vx", "-c", "f"]), "unknown flag -x (in -vx)");
        assert_eq!(err(&["--verbose", "-c", "f"]), "unknown flag --verbose");
    }

    // --check-config
    #[test]
    fn check_config_flag() {
        let args = RunArgs {
            config_path: PathBuf::from("f"),
            verbosity: 0,
        };
        let expected = Command::CheckConfig(args.clone(), CheckScope::WithCluster);
        assert_eq!(parse(&["--check-config", "-c", "f"]), Ok(expected.clone()));
        assert_eq!(parse(&["-c", "f", "--check-config"]), Ok(expected));
        let offline = Command::CheckConfig(args, CheckScope::Offline);
        assert_eq!(parse(&["--check-config", "--offline", "-c", "f"]), Ok(offline.clone()));
        assert_eq!(parse(&["--offline", "-c", "f", "--check-config"]), Ok(offline));
        assert_eq!(
            err(&["--offline", "-c", "f"]),
            "--offline is only meaningful with --check-config"
        );
        assert_eq!(
            err(&["--check-config"]),
            "missing -c/--config FILE: the configuration file is required"
        );
        assert_eq!(
            err(&["--check-config=yes", "-c", "f"]),
            "--check-config takes no value"
        );
    }

    // -V, --version
    #[test]
    fn version_flag() {
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        assert_eq!(parse(&["-c", "f", "--version"]), Ok(Command::Version));
        assert_eq!(
            parse(&["--bogus", "-V"]),
            Ok(Command::Version),
            "--version wins over errors"
        );
        let v = version_text();
        assert!(
            v.starts_with(&format!("kpr-proxy {}", env!("CARGO_PKG_VERSION"))),
            "{v}"
        );
    }

    // -h, --help
    #[test]
    fn help_flag() {
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(
            parse(&["--version", "--help"]),
            Ok(Command::Help),
            "--help wins over --version"
        );
        assert_eq!(
            parse(&["--bogus", "-c", "-h"]),
            Ok(Command::Help),
            "--help wins over errors"
        );
    }

    #[test]
    fn unknown_flags_and_arguments() {
        assert_eq!(err(&["--bogus", "-c", "f"]), "unknown flag --bogus");
        assert_eq!(err(&["-x"]), "unknown flag -x");
        assert_eq!(err(&["--config-file=f"]), "unknown flag --config-file");
        assert_eq!(
            err(&["-c", "f", "extra.yaml"]),
            "unexpected argument \"extra.yaml\" (the configuration file is given with -c FILE)"
        );
        assert_eq!(
            err(&["--"]),
            "unexpected argument \"--\" (the configuration file is given with -c FILE)"
        );
        // The first problem is the one reported.
        assert_eq!(err(&["--one", "--two"]), "unknown flag --one");
    }

    #[test]
    fn help_text_lists_every_flag_and_exit_code() {
        let help = help_text();
        for f in FLAGS {
            assert!(
                help.contains(&f.synopsis()),
                "{} missing from:\n{help}",
                f.synopsis()
            );
            let first_words: String = f
                .help
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                help.contains(&first_words),
                "help of {} missing:\n{help}",
                f.name()
            );
        }
        for (code, meaning) in EXIT_CODES {
            let first_word = meaning.split_whitespace().next().unwrap();
            assert!(
                help.contains(&format!("    {code}    {first_word}")),
                "exit {code} missing:\n{help}"
            );
        }
        for line in help.lines() {
            assert!(line.len() <= 80, "line too long: {line:?}");
        }
        assert!(help.contains("-c, --config FILE"));
        assert!(help.contains("    --check-config"));
    }

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let codes: Vec<i32> = EXIT_CODES.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            codes,
            [
                EXIT_OK,
                EXIT_FAILURE,
                EXIT_USAGE,
                EXIT_CONFIG,
                EXIT_KAFKA_UNREACHABLE
            ]
        );
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn man_page_check_finds_missing_flags() {
        let all = ".TP\n\\fB\\-c\\fR, \\fB\\-\\-config\\fR \\fIFILE\\fR\n.TP\n\\fB\\-v\\fR, \\fB\\-vv\\fR\n\
                   .TP\n\\fB\\-\\-check\\-config\\fR\n.TP\n\\fB\\-\\-offline\\fR\n.TP\n\\fB\\-V\\fR, \\fB\\-\\-version\\fR\n\
                   .TP\n\\fB\\-h\\fR, \\fB\\-\\-help\\fR\n";
        assert_eq!(man_page_flags_missing(all), Vec::<&str>::new());
        // --check-config contains "-c" and "--version" contains "-v": neither counts.
        let partial = "\\-\\-check\\-config \\-\\-version \\-vv \\-\\-configs";
        assert_eq!(
            man_page_flags_missing(partial),
            ["-c", "--config", "-v", "--offline", "-V", "-h", "--help"]
        );
        assert_eq!(man_page_flags_missing("").len(), 9);
        let fonts = "\\f[B]\\-c\\f[], \\f(CW\\-\\-config\\fP \\-v \\&\\-\\-check\\(hyconfig \\fI\\-V\\fR --version -h --help \\-\\-offline";
        assert_eq!(man_page_flags_missing(fonts), Vec::<&str>::new());
        assert_eq!(strip_roff("a\\\\b \\fBx\\fR"), "a\\\\b x");
    }
}
