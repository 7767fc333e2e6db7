//! Authentication: what SASL mechanisms compute, on both sides of the
//! proxy. Toward clients the proxy is the SASL server; toward the cluster
//! it is a SASL client. `scram` holds the arithmetic both share (RFC 5802,
//! RFC 7677); `scram_client` is its client half (toward brokers; the
//! exchange itself is `upstream::sasl`). Toward clients: `plain` and `scram_server` are the
//! mechanisms' server sides, `server` the users and the exchanges a
//! client's session runs (`proxy::apis::sasl` puts them on the wire).
//! `oauthbearer`, `jwt` and `jwks` are the OAUTHBEARER messages and token
//! checks (RFC 7628, RFC 7515/7519); `token_file` the upstream bearer token.

pub mod json;
pub mod jwks;
pub mod jwt;
pub mod oauthbearer;
pub mod plain;
pub mod scram;
pub mod scram_client;
pub mod scram_server;
pub mod server;
#[cfg(test)]
pub(crate) mod test_tokens;
pub mod token_file;
pub mod watched_file;
