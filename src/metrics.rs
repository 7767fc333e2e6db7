//! Process-wide counters, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::SaslMechanism;

macro_rules! counters {
    ($($(#[doc = $doc:expr])* $name:ident: $kind:literal),* $(,)?) => {
        #[derive(Default)]
        pub struct Metrics {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            pub authentication_failures: AuthFailures,
            pub connections_refused: ConnectionRefusals,
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
                self.authentication_failures.render(&mut out);
                self.connections_refused.render(&mut out);
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
    /// Client requests received.
    requests_total: "counter",
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

/// Why a client connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// `listen.max_connections` reached.
    MaxConnections,
    /// The peer's address at its `listen.max_connections_per_ip` (or override).
    PerIpLimit,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 2] = [RefusalReason::MaxConnections, RefusalReason::PerIpLimit];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::MaxConnections => "max_connections",
            RefusalReason::PerIpLimit => "per_ip_limit",
        }
    }
}

/// Client connections refused at accept, per reason (a labelled counter:
/// `kafka_proxy_connections_refused_total{reason="per_ip_limit"}`).
#[derive(Default)]
pub struct ConnectionRefusals {
    max_connections: AtomicU64,
    per_ip_limit: AtomicU64,
}

impl ConnectionRefusals {
    pub fn count(&self, reason: RefusalReason) {
        self.counter(reason).fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: RefusalReason) -> u64 {
        self.counter(reason).load(Ordering::Relaxed)
    }

    fn counter(&self, reason: RefusalReason) -> &AtomicU64 {
        match reason {
            RefusalReason::MaxConnections => &self.max_connections,
            RefusalReason::PerIpLimit => &self.per_ip_limit,
        }
    }

    fn render(&self, out: &mut String) {
        let name = "kafka_proxy_connections_refused_total";
        let _ = writeln!(out, "# HELP {name} Client connections closed at accept, per reason.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for reason in RefusalReason::ALL {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", reason.label(), self.get(reason));
        }
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Serve `GET /metrics` on `addr` from a thread of its own, each answer
/// made by `render` (the caller's `Metrics::render`: this module knows
/// nothing of where the metrics live).
pub fn serve(addr: &str, render: impl Fn() -> String + Send + 'static) -> Result<(), String> {
    let server = tiny_http::Server::http(addr).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4"[..])
                .expect("static header");
            for request in server.incoming_requests() {
                let response = if request.url() == "/metrics" {
                    tiny_http::Response::from_string(render()).with_header(header.clone())
                } else {
                    tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
                };
                let _ = request.respond(response);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}
