//! Reading the answers handlers build on.

use crate::kafka::api::ApiKey;
use crate::kafka::codec::{self, Struct};
use crate::kafka::header::parse_response_header;
use crate::kafka::message::response_schema;

/// A decoded answer (header skipped), or an empty answer with the schema's
/// defaults when nothing went upstream.
pub fn answer_or_defaults(api: ApiKey, version: i16, answer: Option<&[u8]>) -> Result<Struct<'_>, String> {
    let schema = response_schema(api as i16).expect("declared");
    match answer {
        Some(a) => decode_answer(api, version, a),
        None => Ok(codec::with_defaults(&schema.body, version)),
    }
}

/// A decoded answer, its header skipped.
pub fn decode_answer(api: ApiKey, version: i16, answer: &[u8]) -> Result<Struct<'_>, String> {
    let schema = response_schema(api as i16).expect("declared");
    let (_, _, body) = parse_response_header(answer, api as i16, version).map_err(|e| e.to_string())?;
    codec::decode(schema, version, body).map_err(|e| e.to_string())
}

