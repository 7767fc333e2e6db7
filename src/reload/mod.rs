//! `systemctl reload kpr-proxy` (SIGHUP): read the configuration file
//! again and apply what can change while the proxy runs (see `plan` for
//! the lists). A file that does not load or validate changes nothing.
//! Connections open at the reload keep what they started with; what is
//! applied is used by the connections and logins that come after.
//!
//! Each reload is counted in `kafka_proxy_config_reloads_total{result}`
//! (`applied`, `partial`, `failed`) and ends with one INFO line saying
//! what changed (or one ERROR line saying why nothing did).

pub mod plan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use log::{error, info, warn, LevelFilter};

use crate::auth::server::SaslServer;
use crate::config::{self, Config};
use crate::metrics::{MetricsServer, Probes, ReloadResult};
use crate::net::tls::{ServerTls, UpstreamTls};
use crate::net::Shared;
use crate::proxy::ProxyContext;

/// What a configuration gives the running proxy, loaded (files read).
pub struct LiveParts {
    pub client_tls: Option<Arc<ServerTls>>,
    pub upstream_tls: Option<Arc<UpstreamTls>>,
    pub client_sasl: Option<Arc<SaslServer>>,
}

/// Builds the live parts of a config: the same functions as at start, so
/// a reloaded file is checked exactly as a starting one.
pub type BuildLive = Box<dyn Fn(&Config) -> Result<LiveParts, String> + Send>;

/// Serve `/metrics`, `/livez` and `/readyz` of `shared` on `addr`.
pub fn serve_metrics(addr: &str, shared: &Arc<Shared>) -> Result<MetricsServer, String> {
    let (scraped, live, ready) = (shared.clone(), shared.clone(), shared.clone());
    let probes = Probes {
        live: Box::new(move || live.health.liveness(Instant::now())),
        ready: Box::new(move || ready.health.readiness(Instant::now())),
    };
    crate::metrics::serve(addr, move || scraped.metrics.render(), probes)
}

/// Everything a reload needs, kept by the signal thread.
pub struct Reloader {
    /// The file given with `--config`.
    pub path: PathBuf,
    /// The command line's `-v` count, which raises the configured level.
    pub verbosity: u8,
    /// The configuration the proxy runs with (refused fields as at start).
    pub running: Config,
    pub ctx: Arc<ProxyContext>,
    pub build: BuildLive,
    /// The endpoint serving now, if any.
    pub metrics: Option<MetricsServer>,
}

impl Reloader {
    fn failed(&self, why: impl std::fmt::Display) {
        self.ctx.shared.metrics.config_reloads.count(ReloadResult::Failed);
        error!("Configuration reload failed, the running configuration stays: {why}");
    }

    /// Read the file and apply what can change; logs and counts the result.
    pub fn reload(&mut self) {
        info!("Reloading the configuration from {}", self.path.display());
        let loaded = match config::load(&self.path) {
            Ok(loaded) => loaded,
            Err(e) => return self.failed(e.to_string().replace('\n', "; ")),
        };
        let new = loaded.config;
        let unsupported = new.unsupported_features();
        if !unsupported.is_empty() {
            return self.failed(unsupported.join("; "));
        }
        if new.metrics.enabled && new.metrics.address.is_empty() {
            return self.failed("metrics.address is empty");
        }
        let mut known = self.ctx.mapper.known_topics();
        known.extend(self.ctx.cluster.read().topics.keys().cloned());
        let mut plan = plan::plan(&self.running, &new, &known);
        let mut merged = plan::merge(&self.running, &new, &plan);
        // Files named by the config (certificates, keys, JWKS) are read
        // again even when their paths did not change: rotated in place.
        let parts = match (self.build)(&merged) {
            Ok(parts) => parts,
            Err(e) => return self.failed(e),
        };
        for w in &loaded.warnings {
            warn!("{w}");
        }
        if merged.metrics.enabled != self.running.metrics.enabled || merged.metrics.address != self.running.metrics.address {
            if let Err(e) = self.move_metrics(&merged) {
                plan.applied.retain(|a| !a.starts_with("metrics "));
                plan.refused.push(format!("metrics.address {}: {e}; the endpoint stays where it was", merged.metrics.address));
                merged.metrics = self.running.metrics.clone();
            }
        }
        for r in &plan.refused {
            warn!("Configuration reload: {r}");
        }
        let level = crate::logging::effective_level(merged.logging.level, self.verbosity);
        let was = crate::logging::effective_level(self.running.logging.level, self.verbosity);
        if level != was || merged.logging.format != self.running.logging.format {
            crate::logging::reconfigure(level, merged.logging.format);
        }
        let live = &self.ctx.shared.live;
        live.client_tls.set(parts.client_tls);
        live.upstream_tls.set(parts.upstream_tls);
        live.client_sasl.set(parts.client_sasl);
        if plan.mapping {
            self.ctx.mapper.replace_rules(merged.mapping.clone());
            for line in merged.describe_mapping() {
                info!("{line}");
            }
        }
        self.running = merged;
        let result = if plan.refused.is_empty() { ReloadResult::Applied } else { ReloadResult::Partial };
        self.ctx.shared.metrics.config_reloads.count(result);
        info!("{}", summary(&plan, level));
    }

    /// Start the endpoint where `config` says (when enabled), then stop
    /// the old one: a failed bind leaves the old one serving.
    fn move_metrics(&mut self, config: &Config) -> Result<(), String> {
        let started = match config.metrics.enabled {
            true => Some(serve_metrics(&config.metrics.address, &self.ctx.shared)?),
            false => None,
        };
        if let Some(old) = std::mem::replace(&mut self.metrics, started) {
            old.stop();
        }
        if config.metrics.enabled {
            info!("Metrics on http://{}/metrics", config.metrics.address);
        }
        Ok(())
    }
}

/// The one INFO line of a reload.
fn summary(plan: &plan::Plan, level: LevelFilter) -> String {
    let applied = if plan.applied.is_empty() { "no change".to_string() } else { plan.applied.join(", ") };
    let mut line = format!("Configuration reloaded: applied {applied}");
    if !plan.refused.is_empty() {
        let names: Vec<&str> = plan.refused.iter().map(|r| r.split(' ').next().unwrap_or_default()).collect();
        line.push_str(&format!("; refused {} (see the warnings above)", names.join(", ")));
    }
    line.push_str(&format!("; log level {}", level.to_string().to_lowercase()));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_applied_and_refused_fields() {
        let plan = plan::Plan {
            applied: vec!["logging.level (info -> debug)".into()],
            refused: vec!["listen.address cannot change while the proxy runs (a -> b); it keeps a until a restart".into()],
            mapping: false,
        };
        assert_eq!(
            summary(&plan, LevelFilter::Debug),
            "Configuration reloaded: applied logging.level (info -> debug); refused listen.address (see the warnings above); log level debug"
        );
        assert_eq!(summary(&plan::Plan::default(), LevelFilter::Info), "Configuration reloaded: applied no change; log level info");
    }
}
