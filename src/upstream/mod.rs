//! Connections to the brokers: opening them (`connect`), the proxy's own
//! blocking requests (`control`), and the metadata refresher (`refresh`).

pub mod connect;
pub mod control;
pub mod refresh;
