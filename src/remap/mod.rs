//! Pure rewrites of requests and responses: no sockets, no threads. The
//! proxy module decides when to apply them.

pub mod addresses;
pub mod fetch;
pub mod fetch_answers;
pub mod fetch_plan;
pub mod groups;
pub mod mapping;
pub mod metadata;
pub mod offset_fetch;
pub mod produce;
pub mod producer_ids;
pub mod rules;
pub mod split;
