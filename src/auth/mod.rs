//! Authentication: what SASL mechanisms compute, on both sides of the
//! proxy. Toward clients the proxy is the SASL server; toward the cluster
//! it is a SASL client. `scram` holds the arithmetic both share (RFC 5802,
//! RFC 7677). Toward clients: `plain` and `scram_server` are the
//! mechanisms' server sides, `server` the users and the exchanges a
//! client's session runs (`proxy::sasl` puts them on the wire).

pub mod scram;
pub mod plain;
pub mod scram_server;
pub mod server;
