//! `kpr-proxy --config FILE`: parse the command line, load the
//! configuration, start the proxy, serve until SIGINT/SIGTERM.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kpr_proxy::auth::server::SaslServer;
use kpr_proxy::auth::token_file::TokenFile;
use kpr_proxy::cli::{self, CheckScope, Command, RunArgs};
use kpr_proxy::cluster::BrokerAddr;
use kpr_proxy::config::{self, Config};
use kpr_proxy::logging;
use kpr_proxy::net::tls::{ServerTls, UpstreamTls};
use kpr_proxy::net::Shared;
use kpr_proxy::proxy::{self, Proxy, ProxySettings, StartError};
use kpr_proxy::reload;
use log::{error, info, warn};

/// Unanswered requests per client connection before the proxy stops
/// reading from it (librdkafka and the Java client keep at most 5 per
/// connection by default).
const MAX_IN_FLIGHT_PER_CLIENT: usize = 128;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let command = match cli::parse_args(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}\n{}", cli::PROGRAM, cli::USAGE);
            return exit(cli::EXIT_USAGE);
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::help_text());
            exit(cli::EXIT_OK)
        }
        Command::Version => {
            println!("{}", cli::version_text());
            exit(cli::EXIT_OK)
        }
        Command::CheckConfig(args, scope) => check_config(&args, scope),
        Command::Run(args) => run(&args),
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code as u8)
}

fn fail(code: i32, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{}: {message}", cli::PROGRAM);
    exit(code)
}

fn load(args: &RunArgs) -> Result<(Config, Vec<String>), ExitCode> {
    match config::load(&args.config_path) {
        Ok(loaded) => Ok((loaded.config, loaded.warnings)),
        Err(e) => Err(fail(cli::EXIT_CONFIG, e)),
    }
}

/// Problems that keep a valid configuration from running in this version.
fn refusals(config: &Config) -> Vec<String> {
    let mut out = config.unsupported_features();
    if config.metrics.enabled && config.metrics.address.is_empty() {
        out.push("metrics.address is empty".into());
    }
    out
}

/// The TLS sides the configuration asks for, their files read and
/// checked: (toward clients, toward the cluster).
type TlsSides = (Option<Arc<ServerTls>>, Option<Arc<UpstreamTls>>);

fn tls_sides(config: &Config) -> Result<TlsSides, String> {
    let security = &config.listen.security;
    let client = match (&security.tls, security.protocol.uses_tls()) {
        (Some(tls), true) => Some(Arc::new(ServerTls::from_config(tls)?)),
        _ => None,
    };
    let upstream = if config.kafka.security_protocol.uses_tls() {
        Some(Arc::new(UpstreamTls::from_config(config.kafka.tls.as_ref())?))
    } else {
        None
    };
    Ok((client, upstream))
}

/// The SASL server toward clients, its JWKS loaded, when clients
/// authenticate with SASL; an unusable JWKS file is an error naming the
/// field.
fn client_sasl(config: &Config) -> Result<Option<Arc<SaslServer>>, String> {
    match (&config.listen.security.sasl, config.listen.security.protocol.uses_sasl()) {
        (Some(sasl), true) => {
            let server = SaslServer::new(sasl)?;
            // Passthrough: the brokers check the clients' passwords.
            let passthrough = config.kafka.sasl.as_ref().is_some_and(|k| k.mode == kpr_proxy::config::SaslMode::Passthrough);
            Ok(Some(Arc::new(if passthrough { server.relaying() } else { server })))
        }
        _ => Ok(None),
    }
}

fn check_config(args: &RunArgs, scope: CheckScope) -> ExitCode {
    let (config, warnings) = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &warnings {
        println!("warning: {w}");
    }
    let refused = refusals(&config);
    if !refused.is_empty() {
        return fail(cli::EXIT_CONFIG, refused.join("\n"));
    }
    let (_, upstream_tls) = match tls_sides(&config) {
        Ok(sides) => sides,
        Err(e) => return fail(cli::EXIT_CONFIG, e),
    };
    let security = match client_sasl(&config).and_then(|_| kafka_security(&config)) {
        Ok(security) => security,
        Err(e) => return fail(cli::EXIT_CONFIG, e),
    };
    println!("{}: configuration is valid", args.config_path.display());
    println!("{}", config.listen.describe_advertised());
    for line in config.describe_mapping() {
        println!("{line}");
    }
    if scope == CheckScope::Offline {
        // ExecStartPre: a broker outage must not keep the service from (re)starting.
        println!("offline: the Kafka cluster was not contacted");
        return exit(cli::EXIT_OK);
    }
    // What the rules mean for the topics the cluster holds now.
    let cluster = Arc::new(kpr_proxy::cluster::Cluster::new(config.kafka.bootstrap_servers.clone()));
    let mut control = kpr_proxy::upstream::control::ControlClient::new(
        cluster.clone(),
        config.kafka.connection_timeout(),
        config.kafka.request_timeout(),
    )
    .with_sasl(security.sasl_login(), security.bearer_token.clone())
    .with_tls(upstream_tls);
    if let Err(e) = control.bootstrap() {
        // Which step failed: TCP connect, SASL mechanism, SASL credentials, ...
        return fail(cli::EXIT_KAFKA_UNREACHABLE, format!("cannot reach the Kafka cluster to list its topics ({} failed): {e}", e.step()));
    }
    let mapper = kpr_proxy::remap::mapping::Mapper::new(config.mapping.clone());
    if mapper.remaps_anything() {
        let names: Vec<String> = cluster.read().topics.keys().cloned().collect();
        kpr_proxy::upstream::cleanup::learn(&mut control, &mapper, &names);
    }
    let view = cluster.read();
    let mut names: Vec<&String> = view.topics.keys().collect();
    names.sort();
    println!("Topics of the cluster ({}):", names.len());
    let mut mismatches = 0;
    let mut compacted = 0;
    for name in names {
        let physical = view.topics[name].partitions.len();
        let rule = mapper.rule_for(name);
        let line = match mapper.decide(name, &view) {
            kpr_proxy::remap::mapping::Decision::Remap(m) => format!(
                "  {name}: {} virtual -> {physical} physical partitions ({}:1) by {}{}",
                m.virtual_count,
                m.ratio(),
                rule.map_or_else(String::new, |r| r.name()),
                match mapper.policy(name) {
                    Some(kpr_proxy::remap::mapping::CleanupPolicy::Unreadable(why)) => {
                        format!("; cleanup.policy unknown ({why}): remapped as if not compacted")
                    }
                    _ => String::new(),
                }
            ),
            kpr_proxy::remap::mapping::Decision::Compacted { .. } => {
                compacted += 1;
                format!(
                    "  {name}: COMPACTED: cleanup.policy contains compact, so it cannot be remapped (compaction is per \
                     physical partition); the proxy will report an error for this topic"
                )
            }
            kpr_proxy::remap::mapping::Decision::Mismatch { rule, expected, actual } => {
                mismatches += 1;
                format!("  {name}: MISMATCH: {actual} physical partitions, but {rule} expects {expected}; the proxy will report an error for this topic")
            }
            kpr_proxy::remap::mapping::Decision::PassThrough => {
                let why = if view.topics[name].internal || name.starts_with("__") {
                    "internal topic".to_string()
                } else {
                    match rule {
                        Some(r) if r.is_passthrough() => format!("1:1 by {}", r.name()),
                        Some(r) => format!("{} applies only to topics with {} partitions", r.name(), r.physical_partitions),
                        None => "no rule".to_string(),
                    }
                };
                format!("  {name}: {physical} partitions, passed through ({why})")
            }
        };
        println!("{line}");
    }
    if mismatches > 0 {
        println!("{mismatches} topic(s) contradict their rule");
    }
    if compacted > 0 {
        println!("{compacted} compacted topic(s) under a remapping rule: refused, not remapped");
    }
    if mapper.remaps_anything() {
        let topic = &config.kafka.producer_id_topic;
        match view.topics.get(topic) {
            Some(t) => println!("Producer-id topic {topic}: present ({} partition(s))", t.partitions.len()),
            None => println!(
                "Producer-id topic {topic}: missing; the proxy creates it at start (1 partition, compacted), so its \
                 identity needs Create, Read and Write on it"
            ),
        }
    }
    exit(cli::EXIT_OK)
}

fn settings(config: &Config) -> Result<ProxySettings, String> {
    let listen = config
        .listen
        .address
        .to_socket_addrs()
        .map_err(|e| format!("listen.address {}: {e}", config.listen.address))?
        .next()
        .ok_or_else(|| format!("listen.address {} resolves to no address", config.listen.address))?;
    let (host, port) = config.listen.advertised_host_port();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    let (client_tls, upstream_tls) = tls_sides(config)?;
    let client_sasl = client_sasl(config)?;
    let kafka_security = kafka_security(config)?;
    Ok(ProxySettings {
        listen,
        advertised: BrokerAddr { host: host.to_string(), port: port as i32 },
        bootstrap: config.kafka.bootstrap_servers.clone(),
        connect_timeout: config.kafka.connection_timeout(),
        request_timeout: config.kafka.request_timeout(),
        metadata_refresh: config.kafka.metadata_refresh_interval(),
        producer_log: kpr_proxy::upstream::producer_log::LogSettings {
            topic: config.kafka.producer_id_topic.clone(),
            idle: config.kafka.producer_id_idle(),
            timeout: config.kafka.request_timeout(),
        },
        derived_offset_refresh: config.kafka.derived_offset_refresh_interval(),
        max_connections: config.listen.max_connections,
        max_connections_per_ip: config.listen.per_ip.clone(),
        max_frame_bytes: config.listen.max_frame_bytes,
        limits: kpr_proxy::net::limits::ConnectionLimits::from_config(&config.listen),
        max_in_flight_per_client: MAX_IN_FLIGHT_PER_CLIENT,
        workers,
        shutdown_grace: SHUTDOWN_GRACE,
        client_rack: config.kafka.client_rack.clone(),
        listen_security: config.listen.security.clone(),
        kafka_security,
        client_tls,
        upstream_tls,
        client_sasl,
    })
}

/// How the proxy connects to the cluster, with the OAUTHBEARER token file
/// read (an unusable one is an error naming the field).
fn kafka_security(config: &Config) -> Result<kpr_proxy::proxy::KafkaSecurity, String> {
    let token_path = config.kafka.sasl.as_ref().filter(|_| config.kafka.security_protocol.uses_sasl()).and_then(|s| s.token_path.as_ref());
    let bearer_token = match token_path {
        Some(path) => Some(Arc::new(TokenFile::load(path).map_err(|e| format!("kafka.sasl.token_path: {e}"))?)),
        None => None,
    };
    Ok(kpr_proxy::proxy::KafkaSecurity {
        protocol: config.kafka.security_protocol,
        tls: config.kafka.tls.clone(),
        sasl: config.kafka.sasl.clone(),
        bearer_token,
    })
}

fn run(args: &RunArgs) -> ExitCode {
    let (config, warnings) = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let level = logging::effective_level(config.logging.level, args.verbosity);
    if let Err(e) = logging::init(level, config.logging.format) {
        return fail(cli::EXIT_FAILURE, format!("cannot set up logging: {e}"));
    }
    info!("Starting Kafka Partition Remapper v{}", env!("CARGO_PKG_VERSION"));
    let signals = match proxy::catch_signals() {
        Ok(s) => s,
        Err(e) => return fail(cli::EXIT_FAILURE, format!("cannot watch signals: {e}")),
    };
    for w in &warnings {
        warn!("{w}");
    }
    let refused = refusals(&config);
    if !refused.is_empty() {
        for r in &refused {
            error!("{r}");
        }
        return fail(cli::EXIT_CONFIG, refused.join("; "));
    }
    let settings = match settings(&config) {
        Ok(s) => s,
        Err(e) => return fail(cli::EXIT_CONFIG, e),
    };
    let shared = Arc::new(Shared::new());
    // Metrics first: once `Listening on` is logged, a health check may
    // scrape, and the endpoint must already answer.
    let mut metrics_server = None;
    if config.metrics.enabled {
        match reload::serve_metrics(&config.metrics.address, &shared) {
            Ok(server) => metrics_server = Some(server),
            Err(e) => {
                error!("cannot serve metrics on {}: {e}", config.metrics.address);
                return fail(cli::EXIT_FAILURE, format!("cannot serve metrics on {}: {e}", config.metrics.address));
            }
        }
        info!("Metrics on http://{}/metrics", config.metrics.address);
    }
    info!("{}", config.listen.describe_advertised());
    let mapper = kpr_proxy::remap::mapping::Mapper::new(config.mapping.clone());
    let proxy = match Proxy::start(settings, mapper, shared.clone()) {
        Ok(p) => p,
        Err(e) => {
            error!("{e}");
            let code = match e {
                StartError::Upstream(_) => cli::EXIT_KAFKA_UNREACHABLE,
                _ => cli::EXIT_FAILURE,
            };
            return fail(code, e);
        }
    };
    for line in config.describe_mapping() {
        info!("{line}");
    }
    let build: reload::BuildLive = Box::new(|config| {
        let (client_tls, upstream_tls) = tls_sides(config)?;
        Ok(reload::LiveParts { client_tls, upstream_tls, client_sasl: client_sasl(config)? })
    });
    let mut reloader = reload::Reloader {
        path: args.config_path.clone(),
        verbosity: args.verbosity,
        running: config,
        ctx: proxy.context().clone(),
        build,
        metrics: metrics_server,
    };
    if let Err(e) = proxy::watch_signals(signals, shared.clone(), proxy.context().handle.clone(), move || reloader.reload()) {
        return fail(cli::EXIT_FAILURE, format!("cannot watch signals: {e}"));
    }
    match proxy.serve() {
        Ok(()) => {
            info!("Stopped");
            exit(cli::EXIT_OK)
        }
        Err(e) => {
            error!("event loop failed: {e}");
            fail(cli::EXIT_FAILURE, e)
        }
    }
}
