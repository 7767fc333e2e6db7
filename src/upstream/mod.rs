//! Connections to the brokers: opening them (`connect`), the proxy's own
//! blocking requests (`control`), the metadata refresher (`refresh`), and the
//! producer-id topic every instance shares (`producer_log`).

pub mod connect;
pub mod control;
pub mod producer_log;
pub mod refresh;
