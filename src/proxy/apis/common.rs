//! Reading the answers handlers build on.

use crate::kafka::api::ApiKey;
use crate::kafka::codec::{self, Struct};
use crate::kafka::message::{decode_response, response_schema};

/// A decoded answer (header skipped), or an empty answer with the schema's
/// defaults when nothing went upstream.
pub fn answer_or_defaults(api: ApiKey, version: i16, answer: Option<&[u8]>) -> Result<Struct<'_>, String> {
    match answer {
        Some(a) => Ok(decode_response(api as i16, version, a)?.body),
        None => Ok(codec::with_defaults(&response_schema(api as i16).expect("declared").body, version)),
    }
}
