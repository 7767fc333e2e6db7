//! Process-wide counters, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::SaslMechanism;
use crate::kafka::api::api_name;

macro_rules! counters {
    ($($(#[doc = $doc:expr])* $name:ident: $kind:literal),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            pub authentication_failures: AuthFailures,
            pub requests: RequestsByApi,
            pub connections_closed: ConnectionsClosed,
            pub connections_refused: ConnectionRefusals,
            pub config_reloads: ConfigReloads,
        }

        impl Metrics {
            /// The Prometheus text exposition of every counter.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let help = concat!($($doc),*).trim();
                    let _ = writeln!(out, "# HELP kafka_proxy_{} {}", stringify!($name), help);
                    let _ = writeln!(out, "# TYPE kafka_proxy_{} {}", stringify!($name), $kind);
                    let _ = writeln!(out, "kafka_proxy_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                self.requests.render(&mut out);
                self.authentication_failures.render(&mut out);
                self.connections_closed.render(&mut out);
                self.connections_refused.render(&mut out);
                self.config_reloads.render(&mut out);
                out
            }
        }
    };
}

counters! {
    /// Client connections currently open.
    connections_active: "gauge",
    /// Client connections accepted since start.
    connections_total: "counter",
    /// Client connections refused at accept, for any reason (per reason: connections_refused_total).
    connections_rejected: "counter",
    /// Client frames refused as oversize or malformed.
    frames_rejected: "counter",
    /// Client requests answered with an error by the proxy itself.
    requests_refused_total: "counter",
    /// Upstream connections that failed or timed out.
    upstream_errors_total: "counter",
    /// Partition numbers rewritten between virtual and physical.
    remapping_operations_total: "counter",
    /// Records tagged with the kpr.vp header on produce.
    records_tagged_total: "counter",
    /// Record batches tagged on produce.
    batches_tagged_total: "counter",
    /// Record batches that failed their CRC-32C check where the proxy would rewrite them: refused on produce (CORRUPT_MESSAGE), never split on fetch.
    corrupt_batches_total: "counter",
    /// Record batches on fetch replaced by an empty batch (other virtual partitions' data).
    batches_filtered_total: "counter",
    /// Record batches holding several virtual partitions' records, cut down to one's.
    batches_split_total: "counter",
    /// Record bytes read from upstream fetch responses of remapped topics.
    fetch_bytes_upstream_total: "counter",
    /// Record bytes returned to clients for remapped topics.
    fetch_bytes_returned_total: "counter",
    /// Produce requests for remapped topics sent upstream merged with others of the same client burst.
    produce_requests_merged_total: "counter",
    /// Upstream produce requests those were merged into.
    produce_requests_merged_into_total: "counter",
    /// Producer ids obtained from the broker for k >= 1 virtual partitions.
    derived_producer_ids_total: "counter",
    /// Topics whose physical partition count contradicts their mapping rule.
    topics_mismatched: "gauge",
    /// Compacted topics a rule would remap, refused instead.
    topics_compacted_refused: "gauge",
}

/// The values of a counter's one label, and how the counter is rendered.
pub trait CounterLabel: Copy + PartialEq + std::fmt::Display + 'static {
    /// Every value, in the order rendered.
    const ALL: &'static [Self];
    const NAME: &'static str;
    const HELP: &'static str;
    /// The label's name: `mechanism` in `...{mechanism="PLAIN"}`.
    const KEY: &'static str;
}

/// A counter per value of one label, every value rendered (zeros too).
pub struct LabelledCounter<L: CounterLabel> {
    counts: Vec<AtomicU64>,
    _label: std::marker::PhantomData<L>,
}

impl<L: CounterLabel> Default for LabelledCounter<L> {
    fn default() -> Self {
        LabelledCounter { counts: L::ALL.iter().map(|_| AtomicU64::new(0)).collect(), _label: std::marker::PhantomData }
    }
}

impl<L: CounterLabel> LabelledCounter<L> {
    pub fn count(&self, label: L) {
        self.counter(label).fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, label: L) -> u64 {
        self.counter(label).load(Ordering::Relaxed)
    }

    fn counter(&self, label: L) -> &AtomicU64 {
        let index = L::ALL.iter().position(|l| *l == label).expect("every label value is in ALL");
        &self.counts[index]
    }

    fn render(&self, out: &mut String) {
        let (name, key) = (L::NAME, L::KEY);
        let _ = writeln!(out, "# HELP {name} {}", L::HELP);
        let _ = writeln!(out, "# TYPE {name} counter");
        for label in L::ALL {
            let _ = writeln!(out, "{name}{{{key}=\"{label}\"}} {}", self.get(*label));
        }
    }
}

/// Client logins refused, per SASL mechanism:
/// `kafka_proxy_authentication_failures_total{mechanism="PLAIN"}`.
pub type AuthFailures = LabelledCounter<SaslMechanism>;

impl CounterLabel for SaslMechanism {
    const ALL: &'static [Self] =
        &[SaslMechanism::Plain, SaslMechanism::ScramSha256, SaslMechanism::ScramSha512, SaslMechanism::OAuthBearer];
    const NAME: &'static str = "kafka_proxy_authentication_failures_total";
    const HELP: &'static str = "Client SASL logins refused, per mechanism.";
    const KEY: &'static str = "mechanism";
}

/// Why a client connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// `listen.max_connections` reached.
    MaxConnections,
    /// The peer's address at its `listen.max_connections_per_ip` (or override).
    PerIpLimit,
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefusalReason::MaxConnections => "max_connections",
            RefusalReason::PerIpLimit => "per_ip_limit",
        })
    }
}

impl CounterLabel for RefusalReason {
    const ALL: &'static [Self] = &[RefusalReason::MaxConnections, RefusalReason::PerIpLimit];
    const NAME: &'static str = "kafka_proxy_connections_refused_total";
    const HELP: &'static str = "Client connections closed at accept, per reason.";
    const KEY: &'static str = "reason";
}

/// Client connections refused at accept, per reason:
/// `kafka_proxy_connections_refused_total{reason="per_ip_limit"}`.
pub type ConnectionRefusals = LabelledCounter<RefusalReason>;

/// Kafka's API keys run from 0 to well under 128 (the highest today is in
/// the 90s): one counter each keeps the label set bounded; anything else
/// (a negative key, a frame too short to hold one) counts as `unknown`.
const API_KEY_SLOTS: usize = 128;

/// Client requests received, per API (a labelled counter:
/// `kafka_proxy_requests_total{api="Produce"}`, Kafka's API names).
pub struct RequestsByApi {
    by_key: [AtomicU64; API_KEY_SLOTS],
    unknown: AtomicU64,
}

impl Default for RequestsByApi {
    fn default() -> Self {
        RequestsByApi { by_key: std::array::from_fn(|_| AtomicU64::new(0)), unknown: AtomicU64::new(0) }
    }
}

impl RequestsByApi {
    /// One request of API `key` (`None`: no key could be read).
    pub fn count(&self, key: Option<i16>) {
        self.counter(key).fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, key: Option<i16>) -> u64 {
        self.counter(key).load(Ordering::Relaxed)
    }

    /// Every API's requests together.
    pub fn total(&self) -> u64 {
        self.by_key.iter().chain([&self.unknown]).map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn counter(&self, key: Option<i16>) -> &AtomicU64 {
        key.and_then(|k| usize::try_from(k).ok())
            .and_then(|k| self.by_key.get(k))
            .unwrap_or(&self.unknown)
    }

    /// The APIs seen so far, one series each (none before the first request).
    fn render(&self, out: &mut String) {
        let name = "kafka_proxy_requests_total";
        let _ = writeln!(out, "# HELP {name} Client requests received, per API type.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (key, counter) in self.by_key.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(out, "{name}{{api=\"{}\"}} {n}", api_name(key as i16));
            }
        }
        let unknown = self.unknown.load(Ordering::Relaxed);
        if unknown > 0 {
            let _ = writeln!(out, "{name}{{api=\"unknown\"}} {unknown}");
        }
    }
}

/// Why the proxy closed a client connection on its own, for
/// `kafka_proxy_connections_closed_total{reason="..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No request for `listen.connections_max_idle_ms`.
    Idle,
    /// A started frame did not complete within `listen.frame_timeout_ms`.
    FrameTimeout,
    /// TLS handshake or SASL login not done within `listen.handshake_timeout_ms`.
    HandshakeTimeout,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::Idle => "idle",
            CloseReason::FrameTimeout => "frame_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
        })
    }
}

impl CounterLabel for CloseReason {
    const ALL: &'static [Self] = &[CloseReason::Idle, CloseReason::FrameTimeout, CloseReason::HandshakeTimeout];
    const NAME: &'static str = "kafka_proxy_connections_closed_total";
    const HELP: &'static str = "Client connections the proxy closed on a limit, per reason.";
    const KEY: &'static str = "reason";
}

/// Client connections the proxy closed, per reason:
/// `kafka_proxy_connections_closed_total{reason="idle"}`.
pub type ConnectionsClosed = LabelledCounter<CloseReason>;

/// How a configuration reload (SIGHUP) ended: the `result` label of
/// `kafka_proxy_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// Every change in the file was applied.
    Applied,
    /// Some fields were refused (they need a restart); the rest applied.
    Partial,
    /// The file did not load or validate: nothing changed.
    Failed,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Partial => "partial",
            ReloadResult::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ReloadResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CounterLabel for ReloadResult {
    const ALL: &'static [Self] = &[ReloadResult::Applied, ReloadResult::Partial, ReloadResult::Failed];
    const NAME: &'static str = "kafka_proxy_config_reloads_total";
    const HELP: &'static str =
        "Configuration reloads (SIGHUP), per result: applied, partial (some fields refused), failed.";
    const KEY: &'static str = "result";
}

/// Configuration reloads, per result.
pub type ConfigReloads = LabelledCounter<ReloadResult>;

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the metrics server answers besides `/metrics`: `/livez` and
/// `/readyz`, each (HTTP status, body).
pub struct Probes {
    pub live: Box<dyn Fn() -> (u16, String) + Send>,
    pub ready: Box<dyn Fn() -> (u16, String) + Send>,
}

/// The metrics endpoint's server; [`MetricsServer::stop`] ends its thread
/// (a reload that moves `metrics.address`).
pub struct MetricsServer {
    server: std::sync::Arc<tiny_http::Server>,
}

impl MetricsServer {
    pub fn stop(&self) {
        self.server.unblock();
    }
}

/// Serve `GET /metrics` on `addr` from a thread of its own, each answer
/// made by `render` (the caller's `Metrics::render`: this module knows
/// nothing of where the metrics live), and the health `probes`.
pub fn serve(addr: &str, render: impl Fn() -> String + Send + 'static, probes: Probes) -> Result<MetricsServer, String> {
    let server = std::sync::Arc::new(tiny_http::Server::http(addr).map_err(|e| e.to_string())?);
    let serving = server.clone();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4"[..])
                .expect("static header");
            for request in serving.incoming_requests() {
                let (status, body) = match request.url() {
                    "/metrics" => (200, render()),
                    "/livez" => (probes.live)(),
                    "/readyz" => (probes.ready)(),
                    _ => (404, "not found: try /metrics, /livez or /readyz\n".to_string()),
                };
                let response = tiny_http::Response::from_string(body).with_status_code(status).with_header(header.clone());
                let _ = request.respond(response);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(MetricsServer { server })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::api::ApiKey;

    #[test]
    fn requests_are_counted_per_api() {
        let m = Metrics::default();
        let rendered = m.render();
        assert!(rendered.contains("# TYPE kafka_proxy_requests_total counter"), "{rendered}");
        assert!(!rendered.contains("kafka_proxy_requests_total{"), "no series before a request");
        for key in [Some(ApiKey::Produce as i16), Some(ApiKey::Produce as i16), Some(ApiKey::Metadata as i16),
                    Some(99), Some(-1), Some(128), None] {
            m.requests.count(key);
        }
        assert_eq!(m.requests.get(Some(0)), 2);
        assert_eq!(m.requests.total(), 7);
        let rendered = m.render();
        for line in [
            "kafka_proxy_requests_total{api=\"Produce\"} 2",
            "kafka_proxy_requests_total{api=\"Metadata\"} 1",
            "kafka_proxy_requests_total{api=\"ApiKey99\"} 1",
            "kafka_proxy_requests_total{api=\"unknown\"} 3",
        ] {
            assert!(rendered.lines().any(|l| l == line), "{line} missing in:\n{rendered}");
        }
        assert!(!rendered.contains("\nkafka_proxy_requests_total "), "no unlabelled series");
    }

    #[test]
    fn labelled_counters_render_every_value() {
        let m = Metrics::default();
        m.config_reloads.count(ReloadResult::Partial);
        m.connections_closed.count(CloseReason::Idle);
        m.connections_closed.count(CloseReason::Idle);
        let rendered = m.render();
        for line in [
            "# TYPE kafka_proxy_config_reloads_total counter",
            "kafka_proxy_config_reloads_total{result=\"applied\"} 0",
            "kafka_proxy_config_reloads_total{result=\"partial\"} 1",
            "kafka_proxy_config_reloads_total{result=\"failed\"} 0",
            "kafka_proxy_connections_closed_total{reason=\"idle\"} 2",
            "kafka_proxy_connections_closed_total{reason=\"handshake_timeout\"} 0",
        ] {
            assert!(rendered.lines().any(|l| l == line), "{line} missing in:\n{rendered}");
        }
    }
}
