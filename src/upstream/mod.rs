//! Connections to the brokers: opening them (`connect`), the proxy's own
//! blocking requests (`control`), the metadata refresher (`refresh`), the
//! producer-id topic every instance shares (`producer_log`), and the cleanup
//! policy of topics a rule would remap (`cleanup`).

pub mod cleanup;
pub mod connect;
pub mod control;
pub mod exchange;
pub mod misbehaviour;
pub mod producer_log;
pub mod refresh;
pub mod sasl;
pub mod stop;
