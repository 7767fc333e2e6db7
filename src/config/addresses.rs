//! `host:port` addresses as the configuration writes them: syntax only, no
//! name resolution (a broker may not resolve yet when the proxy starts).

use std::net::IpAddr;

/// Splits `host:port` (IPv6 in brackets: `[::1]:9092`) into the host, without
/// brackets, and the port. The host is not resolved.
pub fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("missing \"]\" after the IPv6 address".to_string());
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err("missing \":port\" after the address".to_string());
        };
        (host, port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err("missing \":port\"".to_string());
        };
        if host.contains(':') {
            return Err("an IPv6 address must be in brackets, e.g. [::1]:9092".to_string());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("the host is empty".to_string());
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '[' | ']' | '@'))
    {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p >= 1 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((host, p)),
        _ => Err(format!("port {port:?} is not a number from 1 to 65535")),
    }
}

/// The host binds every interface (0.0.0.0, ::).
pub(super) fn is_wildcard_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{assert_error, listen, ok};
    use crate::config::AdvertisedSource;

    /// Kafka advertises a listener without a host under the machine's
    /// canonical host name (advertised.listeners defaults to listeners;
    /// ListenerInfo.withWildcardHostnamesResolved): so does the proxy for a
    /// listen.address that binds all interfaces.
    #[test]
    fn wildcard_listen_advertises_the_canonical_host_name() {
        let host = crate::config::host_name::canonical_host_name().unwrap();
        for (addr, port) in [("0.0.0.0:9092", 9092), ("[::]:19092", 19092)] {
            let c = ok(&listen(&format!("  address: \"{addr}\"\n")));
            assert_eq!(c.listen.advertised_address, format!("{host}:{port}"));
            assert_eq!(c.listen.advertised_host_port(), (host.as_str(), port));
            assert_eq!(c.listen.advertised_source, AdvertisedSource::CanonicalHostName);
            assert_eq!(
                c.listen.describe_advertised(),
                format!(
                    "Advertising {host}:{port} (listen.address binds all interfaces; \
                     set listen.advertised_address to override)"
                )
            );
        }
        let c = ok(&listen(
            "  address: \"0.0.0.0:9092\"\n  advertised_address: \"proxy:9092\"\n",
        ));
        assert_eq!(c.listen.advertised_address, "proxy:9092");
        assert_eq!(c.listen.advertised_source, AdvertisedSource::Configured);
        assert_eq!(c.listen.describe_advertised(), "Advertising proxy:9092 (listen.advertised_address)");
        let c = ok(&listen("  address: \"localhost:9092\"\n"));
        assert_eq!(c.listen.advertised_address, "localhost:9092");
        assert_eq!(c.listen.advertised_source, AdvertisedSource::ListenAddress);
    }

    #[test]
    fn advertised_address_cannot_be_wildcard() {
        assert_error(
            &listen("  address: \"0.0.0.0:9092\"\n  advertised_address: \"0.0.0.0:9092\"\n"),
            "listen.advertised_address: 0.0.0.0:9092 is a wildcard address: give an address clients can reach",
        );
    }

    #[test]
    fn address_syntax_errors() {
        let cases = [
            ("localhost", "\"localhost\" is not host:port: missing \":port\""),
            (":9092", "\":9092\" is not host:port: the host is empty"),
            ("h:0", "\"h:0\" is not host:port: port \"0\" is not a number from 1 to 65535"),
            ("h:65536", "\"h:65536\" is not host:port: port \"65536\" is not a number from 1 to 65535"),
            ("h:http", "\"h:http\" is not host:port: port \"http\" is not a number from 1 to 65535"),
            ("h:+1", "\"h:+1\" is not host:port: port \"+1\" is not a number from 1 to 65535"),
            ("::1:9092", "\"::1:9092\" is not host:port: an IPv6 address must be in brackets, e.g. [::1]:9092"),
            ("[::1:9092", "\"[::1:9092\" is not host:port: missing \"]\" after the IPv6 address"),
            ("[::1]", "\"[::1]\" is not host:port: missing \":port\" after the address"),
            ("a b:1", "\"a b:1\" is not host:port: \"a b\" is not a host name or IP address"),
        ];
        for (addr, msg) in cases {
            assert_error(
                &listen(&format!("  address: \"{addr}\"\n")),
                &format!("listen.address: {msg}"),
            );
        }
        assert_eq!(split_host_port("[fe80::1]:65535"), Ok(("fe80::1", 65535)));
    }
}
