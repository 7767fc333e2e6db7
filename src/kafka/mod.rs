//! The Kafka wire protocol: primitives (`wire`), declared message schemas
//! (`schema`), the schema-driven codec (`codec`), headers (`header`) and the
//! v2 record batch (`records`).

pub mod schema;
pub mod wire;
