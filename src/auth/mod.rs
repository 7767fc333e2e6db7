//! Authentication: what SASL mechanisms compute, on both sides of the
//! proxy. Toward clients the proxy is the SASL server; toward the cluster
//! it is a SASL client. `scram` holds the arithmetic both share (RFC 5802,
//! RFC 7677); the exchanges themselves live beside the connections that
//! run them.

pub mod scram;
pub mod scram_client;
