//! kpr-proxy: a Kafka partition remapper.
//!
//! The data path, module by module:
//! client socket (`net`) → frame (`frame`) → request (`kafka`) → remap
//! (`remap`) → upstream (`upstream`) → response → remap back → client.
//! `proxy` ties them together in the worker pool; `cluster` is the shared view
//! of the upstream cluster; `config`, `cli` and `logging` set the process up.

pub mod auth;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod frame;
pub mod kafka;
pub mod live;
pub mod log_summary;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod reload;
pub mod remap;
pub mod upstream;
