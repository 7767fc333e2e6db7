//! The real binary's command line: help, version, usage and configuration
//! errors with their documented exit codes, and the man page documenting
//! every flag.

use std::process::Command;

fn kpr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kpr-proxy"))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kpr-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn help_and_version_exit_zero() {
    let out = kpr().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--config", "--check-config", "--version", "-vv"] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    let out = kpr().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("kpr-proxy 0.1.0"));
}

#[test]
fn usage_errors_exit_two_naming_the_flag() {
    let out = kpr().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("kpr-proxy: ") && err.contains("--bogus"), "{err}");
    let out = kpr().output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no --config is a usage error");
}

#[test]
fn invalid_configuration_exits_three_naming_the_field() {
    let path = write_config(
        "bad",
        "listen: { address: \"127.0.0.1:1\", adress: x }\nkafka: { bootstrap_servers: [\"127.0.0.1:2\"] }\n",
    );
    for args in [vec!["-c"], vec!["--check-config", "-c"]] {
        let out = kpr().args(&args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("adress") && err.contains("listen"), "{err}");
    }
    let path = write_config(
        "ratio",
        "listen: { address: \"127.0.0.1:1\" }\nkafka: { bootstrap_servers: [\"127.0.0.1:2\"] }\n\
         mapping: { virtual_partitions: 25, physical_partitions: 10 }\n",
    );
    let out = kpr().arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8(out.stderr).unwrap().contains("multiple of physical_partitions"));
}

#[test]
fn oauthbearer_files_that_cannot_be_read_stop_the_start_naming_the_field() {
    let upstream = write_config(
        "oauthbearer-upstream",
        "listen: { address: \"127.0.0.1:1\" }\nkafka:\n  bootstrap_servers: [\"127.0.0.1:2\"]\n  \
         security_protocol: SASL_PLAINTEXT\n  sasl: { mechanism: OAUTHBEARER, token_path: /nonexistent/token }\n",
    );
    let listen = write_config(
        "oauthbearer-listen",
        "listen:\n  address: \"127.0.0.1:1\"\n  security:\n    protocol: SASL_PLAINTEXT\n    sasl:\n      \
         enabled_mechanisms: [OAUTHBEARER]\n      \
         oauthbearer: { jwks_path: /nonexistent/jwks.json, issuer: https://idp, audience: kafka }\n\
         kafka: { bootstrap_servers: [\"127.0.0.1:2\"] }\n",
    );
    for (path, field) in [(upstream, "kafka.sasl.token_path"), (listen, "listen.security.sasl.oauthbearer.jwks_path")] {
        for args in [vec!["-c"], vec!["--check-config", "-c"]] {
            let out = kpr().args(&args).arg(&path).output().unwrap();
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(out.status.code(), Some(3), "{args:?} {err}");
            assert!(err.contains(field) && err.contains("/nonexistent/"), "{err}");
        }
    }
}

#[test]
fn sasl_toward_the_cluster_is_carried_out_and_check_config_names_the_step() {
    let path = write_config(
        "kafka-sasl",
        "listen: { address: \"127.0.0.1:19\" }\nkafka:\n  bootstrap_servers: [\"127.0.0.1:1\"]\n  \
         connection_timeout_ms: 500\n  security_protocol: SASL_PLAINTEXT\n  \
         sasl: { mechanism: SCRAM-SHA-512, username: u, password: hidden-pw }\n",
    );
    let out = kpr().arg("--check-config").arg("-c").arg(&path).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("TCP connect failed") && !err.contains("hidden-pw"), "{err}");
}

#[test]
fn unreachable_cluster_exits_four() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let path = write_config(
        "down",
        "listen: { address: \"127.0.0.1:19\" }\nkafka: { bootstrap_servers: [\"127.0.0.1:1\"], connection_timeout_ms: 500 }\n",
    );
    let out = kpr().arg("--check-config").arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stderr).unwrap().contains("Connection refused"));
}

#[test]
fn man_page_documents_every_flag_and_exit_code() {
    let man = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/kpr-proxy.1")).unwrap();
    let missing = kpr_proxy::cli::man_page_flags_missing(&man);
    assert!(missing.is_empty(), "man/kpr-proxy.1 does not document {missing:?}");
    for (code, _) in kpr_proxy::cli::EXIT_CODES {
        assert!(man.contains(&format!(".B {code}\n")), "man page lacks exit status {code}");
    }
}

/// `--check-config --offline` (the unit's ExecStartPre): the file is
/// decoded, validated and its certificate/key/JWKS files read, but the
/// cluster is never contacted, so a broker outage cannot block a restart.
#[test]
fn check_config_offline_validates_files_without_contacting_the_cluster() {
    // A listener that never accepts: any connection attempt would show in its backlog.
    let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    broker.set_nonblocking(true).unwrap();
    let path = write_config(
        "offline",
        &format!(
            "listen: {{ address: \"127.0.0.1:19\" }}\nkafka: {{ bootstrap_servers: [\"{}\"], connection_timeout_ms: 500 }}\n\
             mapping: {{ virtual_partitions: 20, physical_partitions: 10 }}\n",
            broker.local_addr().unwrap()
        ),
    );
    let out = kpr().args(["--check-config", "--offline", "-c"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("configuration is valid") && stdout.contains("20"), "{stdout}");
    assert!(!stdout.contains("Topics of the cluster"), "{stdout}");
    assert!(broker.accept().is_err(), "--offline connected to the bootstrap server");

    // Files named by the configuration are still read: a missing key is exit 3.
    let tls = write_config(
        "offline-tls",
        "listen:\n  address: \"127.0.0.1:19\"\n  security:\n    protocol: SSL\n    \
         tls: { cert_path: /nonexistent/cert.pem, key_path: /nonexistent/key.pem }\n\
         kafka: { bootstrap_servers: [\"127.0.0.1:1\"] }\n",
    );
    let out = kpr().args(["--check-config", "--offline", "-c"]).arg(&tls).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("/nonexistent/cert.pem") || err.contains("cert_path"), "{err}");

    // --offline only qualifies --check-config.
    let out = kpr().args(["--offline", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--offline"));
}
