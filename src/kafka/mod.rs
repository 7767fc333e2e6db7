//! The Kafka wire protocol: primitives (`wire`), declared message schemas
//! (`schema`), the schema-driven codec (`codec`), typed field keys generated
//! from the schemas (`fields`), headers (`header`), API keys and error
//! codes (`api`) and v2 record batches with their codecs (`records`).

pub mod api;
pub mod codec;
pub mod fields;
pub mod header;
pub mod message;
pub mod records;
pub mod schema;
pub mod wire;
