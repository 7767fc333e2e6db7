//! Request and response headers.
//!
//! Request header v1 is api key, api version, correlation id and a classic
//! nullable client id (never compact, even in flexible versions); v2 adds a
//! tagged-field section. Response header v0 is the correlation id; v1 adds
//! tagged fields. The header version follows the body's flexibility, except
//! that ApiVersions responses always use header v0 so that a client can read
//! them before it knows what the broker speaks.

use std::borrow::Cow;

use super::api::ApiKey;
use super::codec::MAX_PREALLOCATED_ELEMENTS;
use super::schema::{registry, MessageKind};
use super::wire::*;

#[derive(Debug, Clone, PartialEq)]
pub struct RequestHeader<'a> {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<Cow<'a, str>>,
    /// Tagged fields of a v2 header, kept as sent.
    pub tags: Vec<(u32, Cow<'a, [u8]>)>,
    /// Whether the header was v2 (flexible).
    pub flexible: bool,
}

/// Whether `version` of `api_key` is a flexible version, for the APIs whose
/// schema the proxy declares.
pub fn is_flexible(api_key: i16, version: i16, kind: MessageKind) -> Option<bool> {
    registry().get(api_key, kind).map(|m| m.flexible.contains(version))
}

/// Just the api key, version and correlation id: the first eight bytes of
/// every request, readable whatever the API.
pub fn peek_request(frame: &[u8]) -> DecodeResult<(i16, i16, i32)> {
    let mut r = Reader::new(frame);
    Ok((r.i16()?, r.i16()?, r.i32()?))
}

/// The correlation id that starts every response.
pub fn peek_correlation_id(frame: &[u8]) -> DecodeResult<i32> {
    Reader::new(frame).i32()
}

impl<'a> RequestHeader<'a> {
    /// Parse the header of a request frame and return it with the body that
    /// follows. Header flexibility (v2) is decided by the declared schema; an
    /// API the proxy does not declare is read with a v1 header, so any v2
    /// tags stay at the start of the body (such requests are never decoded
    /// further).
    pub fn parse(frame: &'a [u8]) -> DecodeResult<(RequestHeader<'a>, &'a [u8])> {
        let mut r = Reader::new(frame);
        let api_key = r.i16()?;
        let api_version = r.i16()?;
        let correlation_id = r.i32()?;
        let client_id = r.nullable_string()?.map(Cow::Borrowed);
        let flexible = is_flexible(api_key, api_version, MessageKind::Request).unwrap_or(false);
        let mut tags = Vec::new();
        if flexible {
            tags = read_tags(&mut r)?;
        }
        let header = RequestHeader { api_key, api_version, correlation_id, client_id, tags, flexible };
        Ok((header, r.rest()))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_i16(out, self.api_key);
        put_i16(out, self.api_version);
        put_i32(out, self.correlation_id);
        put_nullable_string(out, self.client_id.as_deref());
        if self.flexible {
            write_tags(out, &self.tags);
        }
    }

    pub fn api(&self) -> Option<ApiKey> {
        ApiKey::from_i16(self.api_key)
    }
}

/// Whether the response to `version` of `api_key` carries header v1.
pub fn response_header_is_flexible(api_key: i16, version: i16) -> bool {
    api_key != ApiKey::ApiVersions as i16 && is_flexible(api_key, version, MessageKind::Response).unwrap_or(false)
}

/// Tagged fields as read: (tag, raw bytes).
pub type RawTags<'a> = Vec<(u32, Cow<'a, [u8]>)>;

/// Split a response frame into correlation id, header tags and body.
pub fn parse_response_header(frame: &[u8], api_key: i16, version: i16) -> DecodeResult<(i32, RawTags<'_>, &[u8])> {
    let mut r = Reader::new(frame);
    let correlation_id = r.i32()?;
    let tags = if response_header_is_flexible(api_key, version) { read_tags(&mut r)? } else { Vec::new() };
    Ok((correlation_id, tags, r.rest()))
}

/// Write a response header for the response to `version` of `api_key`.
pub fn encode_response_header(out: &mut Vec<u8>, correlation_id: i32, api_key: i16, version: i16, tags: &[(u32, Cow<'_, [u8]>)]) {
    put_i32(out, correlation_id);
    if response_header_is_flexible(api_key, version) {
        write_tags(out, tags);
    }
}

fn read_tags<'a>(r: &mut Reader<'a>) -> DecodeResult<Vec<(u32, Cow<'a, [u8]>)>> {
    let at = r.position();
    let n = r.uvarint()? as usize;
    r.checked_count(n, at)?;
    let mut tags = Vec::with_capacity(n.min(MAX_PREALLOCATED_ELEMENTS));
    for _ in 0..n {
        let tag = r.uvarint()?;
        let size = r.uvarint()? as usize;
        tags.push((tag, Cow::Borrowed(r.take(size)?)));
    }
    Ok(tags)
}

fn write_tags(out: &mut Vec<u8>, tags: &[(u32, Cow<'_, [u8]>)]) {
    put_uvarint(out, tags.len() as u32);
    for (tag, data) in tags {
        put_uvarint(out, *tag);
        put_uvarint(out, data.len() as u32);
        out.extend_from_slice(data);
    }
}
