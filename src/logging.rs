//! Process-wide logging: human text through simplelog, or one JSON object per
//! line on stderr through a small logger of our own.
//!
//! The level comes from `logging.level` in the configuration, raised by the
//! command line's `-v` (debug) and `-vv` (trace): see [`effective_level`].
//! A reload (SIGHUP) changes level and format through [`reconfigure`].
//!
//! Under systemd, when stderr is the journal (`JOURNAL_STREAM` names it),
//! lines carry no time of their own (the journal stamps each) and start
//! with their syslog priority, `<3>` (error) to `<7>` (debug, trace), as
//! sd-daemon(3) describes: `journalctl -p warning` then finds them.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};
use parking_lot::RwLock;

/// How log lines are written (`logging.format` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2024-05-01T12:00:00.123Z [INFO] message` (simplelog).
    #[default]
    Text,
    /// `{"ts":"2024-05-01T12:00:00.123Z","level":"INFO","target":"kpr_proxy::net","msg":"message"}`
    Json,
}

impl LogFormat {
    /// The configuration spelling: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }

    /// Parses the configuration spelling (exact, lower case).
    pub fn from_config(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected one of: text, json)"
            )),
        }
    }
}

/// The level names accepted in `logging.level`, least verbose first.
pub const LEVEL_NAMES: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// Parses `logging.level`: one of `error`, `warn`, `info`, `debug`, `trace`
/// (case-insensitive).
pub fn level_from_config(s: &str) -> Result<LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(format!(
            "unknown log level {s:?} (expected one of: {})",
            LEVEL_NAMES.join(", ")
        )),
    }
}

/// The level to run with: the configured one, raised (never lowered) by the
/// command line's verbosity: `-v` (1) gives at least debug, `-vv` (2 or more)
/// gives trace.
pub fn effective_level(configured: LevelFilter, verbosity: u8) -> LevelFilter {
    let wanted = match verbosity {
        0 => return configured,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    configured.max(wanted)
}

/// The process-wide logger: the one for the current level and format,
/// replaced on reload.
struct Switch {
    current: RwLock<Box<dyn Log>>,
}

impl Log for Switch {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.current.read().enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.current.read().log(record)
    }

    fn flush(&self) {
        self.current.read().flush()
    }
}

static SWITCH: std::sync::OnceLock<&'static Switch> = std::sync::OnceLock::new();

/// Installs the process-wide logger. Call once, early in `main`; a second call
/// fails (the `log` crate allows one logger per process).
pub fn init(level: LevelFilter, format: LogFormat) -> Result<(), String> {
    let switch: &'static Switch = Box::leak(Box::new(Switch { current: RwLock::new(make_logger(level, format)) }));
    log::set_logger(switch).map_err(|e| format!("cannot initialise logging: {e}"))?;
    let _ = SWITCH.set(switch);
    log::set_max_level(level);
    Ok(())
}

/// Changes level and format of the logger `init` installed (a reload).
pub fn reconfigure(level: LevelFilter, format: LogFormat) {
    if let Some(switch) = SWITCH.get() {
        *switch.current.write() = make_logger(level, format);
        log::set_max_level(level);
    }
}

fn make_logger(level: LevelFilter, format: LogFormat) -> Box<dyn Log> {
    let journal = journal_stream_is_stderr();
    match format {
        LogFormat::Text if journal => Box::new(JournalLogger { level }),
        LogFormat::Text if std::io::stderr().is_terminal() => {
            simplelog::TermLogger::new(level, text_config(), simplelog::TerminalMode::Stderr, simplelog::ColorChoice::Auto)
        }
        // Not a terminal (a pipe, a file): plain lines, no colour codes.
        LogFormat::Text => simplelog::WriteLogger::new(level, text_config(), std::io::stderr()),
        LogFormat::Json => Box::new(JsonLogger { level, journal }),
    }
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// `device:inode` of the stream it connects, and a child whose stderr was
/// redirected since must not take the variable for its own.
fn journal_stream_is_stderr() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(named) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let stderr = std::io::stderr().as_fd().try_clone_to_owned().map(std::fs::File::from).and_then(|f| f.metadata());
    stderr.is_ok_and(|m| journal_stream_matches(&named, m.dev(), m.ino()))
}

/// `JOURNAL_STREAM` is `<device>:<inode>`, both decimal (systemd.exec(5)).
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    value.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// The syslog priority of a level, as the journal reads it from a `<N>`
/// prefix: err (3), warning (4), info (6), debug (7).
fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One line for the journal: priority prefix, no time (the journal has
/// it), the module path on debug and trace lines as in the text format.
fn journal_line(record: &Record<'_>) -> String {
    let mut line = format!("<{}>", syslog_priority(record.level()));
    if record.level() >= log::Level::Debug {
        let _ = write!(line, "[{}] {}: ", record.level(), record.target());
    }
    let _ = writeln!(line, "{}", record.args());
    line
}

/// Text lines for the journal (see [`journal_line`]).
struct JournalLogger {
    level: LevelFilter,
}

impl Log for JournalLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let _ = std::io::stderr().lock().write_all(journal_line(record).as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// The simplelog layout: `<RFC 3339 UTC time> [LEVEL] message`, with the
/// module path before the message on debug and trace lines.
fn text_config() -> simplelog::Config {
    simplelog::ConfigBuilder::new()
        .set_time_level(LevelFilter::Error) // time on every line
        .set_time_format_rfc3339() // UTC
        .set_level_padding(simplelog::LevelPadding::Off)
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Debug) // module path on debug and trace lines only
        .set_location_level(LevelFilter::Off)
        .build()
}

/// One JSON object per line on stderr; for the journal, each line starts
/// with the priority prefix too (the journal strips it, the JSON stays).
struct JsonLogger {
    level: LevelFilter,
    journal: bool,
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = json_line(SystemTime::now(), record);
        if self.journal {
            line.insert_str(0, &format!("<{}>", syslog_priority(record.level())));
        }
        // One write of the whole line, so lines from several threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Formats one record as a JSON object followed by a newline.
fn json_line(now: SystemTime, record: &Record<'_>) -> String {
    let mut line = String::with_capacity(128);
    line.push_str("{\"ts\":\"");
    line.push_str(&rfc3339_utc(now));
    line.push_str("\",\"level\":\"");
    line.push_str(record.level().as_str());
    line.push_str("\",\"target\":");
    push_json_string(&mut line, record.target());
    line.push_str(",\"msg\":");
    let msg = match record.args().as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(record.args().to_string()),
    };
    push_json_string(&mut line, &msg);
    line.push_str("}\n");
    line
}

/// Appends `s` as a JSON string literal (RFC 8259): quotes, backslashes and
/// control characters escaped; everything else, including non-ASCII, kept
/// as UTF-8.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7F}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            // Valid in JSON, but not in JavaScript string literals: escape so
            // the line can be pasted anywhere.
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `SystemTime` as RFC 3339 in UTC with milliseconds: `2024-05-01T12:34:56.789Z`.
/// Times before 1970 are written as the epoch.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days`
/// (<https://howardhinnant.github.io/date_algorithms.html#civil_from_days>).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // shift the epoch to 0000-03-01
    let era = z.div_euclid(146_097); // 400-year eras
    let doe = z.rem_euclid(146_097); // day of era [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, from March 1 [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn json(s: &str) -> String {
        let mut out = String::new();
        push_json_string(&mut out, s);
        out
    }

    #[test]
    fn json_escapes_quotes_and_backslashes() {
        assert_eq!(json(r#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        assert_eq!(json(r"audit\..*"), r#""audit\\..*""#);
    }

    #[test]
    fn json_escapes_control_characters() {
        assert_eq!(json("a\nb\rc\td"), r#""a\nb\rc\td""#);
        assert_eq!(json("\u{08}\u{0C}"), r#""\b\f""#);
        assert_eq!(
            json("\u{0}\u{1}\u{1f}\u{7f}"),
            r#""\u0000\u0001\u001f\u007f""#
        );
    }

    #[test]
    fn json_keeps_unicode_and_escapes_line_separators() {
        assert_eq!(json("héllo → 世界 🦀"), "\"héllo → 世界 🦀\"");
        assert_eq!(json("a\u{2028}b\u{2029}"), r#""a\u2028b\u2029""#);
        assert_eq!(json(""), r#""""#);
    }

    #[test]
    fn json_line_has_all_fields() {
        let at = UNIX_EPOCH + Duration::from_millis(1_714_566_896_789);
        let line = json_line(
            at,
            &Record::builder()
                .level(log::Level::Info)
                .target("kpr_proxy::net")
                .args(format_args!("Listening on {}", "0.0.0.0:9092 \"x\""))
                .build(),
        );
        assert_eq!(
            line,
            "{\"ts\":\"2024-05-01T12:34:56.789Z\",\"level\":\"INFO\",\
             \"target\":\"kpr_proxy::net\",\"msg\":\"Listening on 0.0.0.0:9092 \\\"x\\\"\"}\n"
        );
    }

    /// A `Write` whose bytes the test can read after the logger has them.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_line_has_time_level_and_message() {
        let out = Shared::default();
        let logger = simplelog::WriteLogger::new(LevelFilter::Info, text_config(), out.clone());
        let record = |level, msg| {
            logger.log(
                &Record::builder()
                    .level(level)
                    .target("kpr_proxy::main")
                    .args(format_args!("{msg}"))
                    .build(),
            )
        };
        record(log::Level::Info, "Starting Kafka Partition Remapper v0.1.0");
        record(log::Level::Debug, "not shown at info");
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut lines = text.lines();
        let line = lines.next().unwrap();
        assert!(
            line.ends_with(" [INFO] Starting Kafka Partition Remapper v0.1.0"),
            "{line:?}"
        );
        assert!(
            line.starts_with("20") && line.contains('T'),
            "time first: {line:?}"
        );
        assert_eq!(lines.next(), None, "debug record filtered out: {text:?}");
    }

    fn record_line(level: log::Level, msg: &str) -> String {
        journal_line(&Record::builder().level(level).target("kpr_proxy::net").args(format_args!("{msg}")).build())
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_time() {
        assert_eq!(record_line(log::Level::Error, "cannot serve"), "<3>cannot serve\n");
        assert_eq!(record_line(log::Level::Warn, "w"), "<4>w\n");
        assert_eq!(record_line(log::Level::Info, "Listening on 127.0.0.1:9092"), "<6>Listening on 127.0.0.1:9092\n");
        assert_eq!(record_line(log::Level::Debug, "d"), "<7>[DEBUG] kpr_proxy::net: d\n");
        assert_eq!(record_line(log::Level::Trace, "t"), "<7>[TRACE] kpr_proxy::net: t\n");
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(!journal_stream_matches("8:1234", 8, 1235), "another stream: stderr was redirected");
        assert!(!journal_stream_matches("9:1234", 8, 1234));
        assert!(!journal_stream_matches("", 8, 1234));
        assert!(!journal_stream_matches("8-1234", 8, 1234));
    }

    #[test]
    fn journal_stream_is_read_from_stderr() {
        // The test's own stderr is not the journal whatever the variable says.
        std::env::set_var("JOURNAL_STREAM", "0:0");
        assert!(!journal_stream_is_stderr());
        let m = {
            use std::os::fd::AsFd;
            let fd = std::io::stderr().as_fd().try_clone_to_owned().unwrap();
            std::fs::File::from(fd).metadata().unwrap()
        };
        use std::os::unix::fs::MetadataExt;
        std::env::set_var("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        assert!(journal_stream_is_stderr());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!journal_stream_is_stderr());
    }

    #[test]
    fn civil_from_days_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29)); // divisible by 400: leap
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1)); // 2100 is not a leap year
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
    }

    #[test]
    fn civil_from_days_is_continuous() {
        // Walk 1970..2400 a day at a time and check each step moves the date by one.
        let mut prev = civil_from_days(0);
        for d in 1..157_000 {
            let cur = civil_from_days(d);
            let (y, m, day) = prev;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if day < month_len {
                (y, m, day + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            assert_eq!(cur, expected, "day {d}");
            prev = cur;
        }
    }

    #[test]
    fn rfc3339_formats_utc_with_millis() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_399, 999_999_999);
        assert_eq!(rfc3339_utc(t), "2000-02-28T23:59:59.999Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
        assert_eq!(rfc3339_utc(t), "2100-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn level_names() {
        assert_eq!(level_from_config("error"), Ok(LevelFilter::Error));
        assert_eq!(level_from_config("warn"), Ok(LevelFilter::Warn));
        assert_eq!(level_from_config("info"), Ok(LevelFilter::Info));
        assert_eq!(level_from_config("DEBUG"), Ok(LevelFilter::Debug));
        assert_eq!(level_from_config("trace"), Ok(LevelFilter::Trace));
        let err = level_from_config("verbose").unwrap_err();
        assert!(
            err.contains("\"verbose\"") && err.contains("error, warn, info, debug, trace"),
            "{err}"
        );
    }

    #[test]
    fn log_formats() {
        assert_eq!(LogFormat::from_config("text"), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_config("json"), Ok(LogFormat::Json));
        assert!(LogFormat::from_config("JSON").is_err());
        assert_eq!(LogFormat::Json.as_str(), "json");
    }

    #[test]
    fn verbosity_raises_never_lowers() {
        assert_eq!(effective_level(LevelFilter::Info, 0), LevelFilter::Info);
        assert_eq!(effective_level(LevelFilter::Warn, 1), LevelFilter::Debug);
        assert_eq!(effective_level(LevelFilter::Info, 2), LevelFilter::Trace);
        assert_eq!(effective_level(LevelFilter::Error, 5), LevelFilter::Trace);
        assert_eq!(effective_level(LevelFilter::Trace, 1), LevelFilter::Trace);
    }
}
