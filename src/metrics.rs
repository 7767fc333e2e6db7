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
    /// Client connections refused because max_connections was reached.
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

/// Client logins refused, per SASL mechanism (a labelled counter:
/// `kafka_proxy_authentication_failures_total{mechanism="PLAIN"}`).
#[derive(Default)]
pub struct AuthFailures {
    plain: AtomicU64,
    scram_sha_256: AtomicU64,
    scram_sha_512: AtomicU64,
    oauthbearer: AtomicU64,
}

impl AuthFailures {
    pub fn count(&self, mechanism: SaslMechanism) {
        self.counter(mechanism).fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, mechanism: SaslMechanism) -> u64 {
        self.counter(mechanism).load(Ordering::Relaxed)
    }

    fn counter(&self, mechanism: SaslMechanism) -> &AtomicU64 {
        match mechanism {
            SaslMechanism::Plain => &self.plain,
            SaslMechanism::ScramSha256 => &self.scram_sha_256,
            SaslMechanism::ScramSha512 => &self.scram_sha_512,
            SaslMechanism::OAuthBearer => &self.oauthbearer,
        }
    }

    fn render(&self, out: &mut String) {
        let name = "kafka_proxy_authentication_failures_total";
        let _ = writeln!(out, "# HELP {name} Client SASL logins refused, per mechanism.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha256, SaslMechanism::ScramSha512, SaslMechanism::OAuthBearer] {
            let _ = writeln!(out, "{name}{{mechanism=\"{mechanism}\"}} {}", self.get(mechanism));
        }
    }
}

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

impl CloseReason {
    pub const ALL: [CloseReason; 3] = [CloseReason::Idle, CloseReason::FrameTimeout, CloseReason::HandshakeTimeout];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::FrameTimeout => "frame_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
        }
    }
}

/// `impl Label` for a field-less enum whose `ALL` lists its values in
/// declaration order.
macro_rules! label {
    ($ty:ident, $metric:literal, $key:literal, $label:path, $help:literal) => {
        impl Label for $ty {
            const METRIC: &'static str = $metric;
            const HELP: &'static str = $help;
            const KEY: &'static str = $key;
            const ALL: &'static [Self] = &$ty::ALL;
            fn label(self) -> &'static str {
                $label(self)
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

label!(CloseReason, "kafka_proxy_connections_closed_total", "reason", CloseReason::label,
       "Client connections the proxy closed on a limit, per reason.");

/// Client connections the proxy closed, per reason (a labelled counter).
pub type ConnectionsClosed = PerLabel<CloseReason, { CloseReason::ALL.len() }>;

/// The values of a counter's label, and the counter's name.
pub trait Label: Copy + 'static {
    const METRIC: &'static str;
    const HELP: &'static str;
    /// The label's name: `reason` in `name{reason="idle"}`.
    const KEY: &'static str;
    const ALL: &'static [Self];
    fn label(self) -> &'static str;
    /// Its position in `ALL`.
    fn index(self) -> usize;
}

/// A counter per value of label `L`, every value rendered (zeros too).
pub struct PerLabel<L: Label, const N: usize> {
    counts: [AtomicU64; N],
    label: std::marker::PhantomData<L>,
}

impl<L: Label, const N: usize> Default for PerLabel<L, N> {
    fn default() -> Self {
        PerLabel { counts: std::array::from_fn(|_| AtomicU64::new(0)), label: std::marker::PhantomData }
    }
}

impl<L: Label, const N: usize> PerLabel<L, N> {
    pub fn count(&self, value: L) {
        self.counts[value.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, value: L) -> u64 {
        self.counts[value.index()].load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String) {
        let name = L::METRIC;
        let _ = writeln!(out, "# HELP {name} {}", L::HELP);
        let _ = writeln!(out, "# TYPE {name} counter");
        for value in L::ALL {
            let _ = writeln!(out, "{name}{{{}=\"{}\"}} {}", L::KEY, value.label(), self.get(*value));
        }
    }
}

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
    pub const ALL: [ReloadResult; 3] = [ReloadResult::Applied, ReloadResult::Partial, ReloadResult::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied => "applied",
            ReloadResult::Partial => "partial",
            ReloadResult::Failed => "failed",
        }
    }
}

label!(ReloadResult, "kafka_proxy_config_reloads_total", "result", ReloadResult::as_str,
       "Configuration reloads (SIGHUP), per result: applied, partial (some fields refused), failed.");

/// Configuration reloads, per result.
pub type ConfigReloads = PerLabel<ReloadResult, { ReloadResult::ALL.len() }>;

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
