//! Authentication: what SASL mechanisms compute, on both sides of the
//! proxy. Toward clients the proxy is the SASL server; toward the cluster
//! it is a SASL client. `scram` holds the arithmetic both share (RFC 5802,
//! RFC 7677); `oauthbearer`, `jwt` and `jwks` the OAUTHBEARER messages and
//! token checks (RFC 7628, RFC 7515/7519); `token_file` the upstream bearer
//! token. The exchanges themselves live beside the connections that run
//! them.

pub mod json;
pub mod jwks;
pub mod jwt;
pub mod oauthbearer;
pub mod scram;
#[cfg(test)]
mod test_tokens;
pub mod token_file;
pub mod watched_file;
