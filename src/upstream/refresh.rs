//! Periodic metadata refresh, so routing follows leader changes and new
//! topics even when no client asks for metadata.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::control::ControlClient;
use crate::net::Shared;

/// Refresh every `interval`; `after_refresh` runs after each success, with
/// the refresher's client (the proxy reads new topics' cleanup policy and
/// reports topics that contradict their rule there).
pub fn run(mut client: ControlClient, interval: Duration, shared: Arc<Shared>, after_refresh: impl Fn(&mut ControlClient)) {
    let mut healthy = true;
    let mut next = Instant::now() + interval;
    while !shared.shutdown.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100).min(interval));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + interval;
        match client.bootstrap() {
            Ok(()) => {
                shared.health.refreshed(Instant::now());
                if !healthy {
                    info!("Kafka cluster reachable again");
                    healthy = true;
                }
                after_refresh(&mut client);
            }
            Err(_) if shared.shutdown.load(Ordering::SeqCst) => {}
            Err(e) => {
                shared.health.refresh_failed(&e.to_string());
                if healthy {
                    warn!("Metadata refresh failed: {e}");
                }
                healthy = false;
                // Retry sooner while the cluster is away.
                next = Instant::now() + interval.min(Duration::from_secs(2));
            }
        }
    }
}
