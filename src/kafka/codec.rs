//! Schema-driven decoding and encoding of message bodies.
//!
//! A decoded message is a tree of [`Value`]s shaped by its
//! [`MessageSchema`]. Record data and bytes fields borrow from the frame
//! (`Cow::Borrowed`) so a decode copies no payload; the remap code replaces
//! what it changes with owned values. Tagged fields the schema does not know
//! are kept as raw bytes and written back in tag order, so the proxy never
//! drops what a newer client or broker sent.
//!
//! Fields are read and written through the typed keys of `kafka::fields`
//! (`s.read(produce_request::ACKS)`); the getters by name below remain for
//! the modules not yet converted (`proxy/`, `upstream/control.rs`,
//! `upstream/producer_log.rs`).

use std::borrow::Cow;

use super::schema::{FieldSchema, FieldType, MessageSchema, StructSchema};
use super::wire::*;

#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// The field does not exist in this version, or is a tagged field that
    /// was not sent.
    Absent,
    Bool(bool),
    Int8(i8),
    Int16(i16),
    Uint16(u16),
    Int32(i32),
    Uint32(u32),
    Int64(i64),
    Float64(f64),
    String(Option<Cow<'a, str>>),
    Bytes(Option<Cow<'a, [u8]>>),
    Records(Option<Cow<'a, [u8]>>),
    Uuid([u8; 16]),
    Array(Option<Vec<Value<'a>>>),
    Struct(Struct<'a>),
    /// A null struct (only in fields with nullable versions).
    NullStruct,
}

/// The fields of one struct, in schema order, plus the tagged fields the
/// schema does not declare.
#[derive(Debug, Clone, PartialEq)]
pub struct Struct<'a> {
    pub schema: &'a StructSchema,
    pub fields: Vec<Value<'a>>,
    pub unknown_tags: Vec<(u32, Cow<'a, [u8]>)>,
}

impl<'a> Struct<'a> {
    fn index(&self, name: &str) -> usize {
        self.schema
            .index_of(name)
            .unwrap_or_else(|| panic!("no field {name:?} in schema (fields: {:?})", self.field_names()))
    }

    fn field_names(&self) -> Vec<&str> {
        self.schema.fields.iter().map(|f| f.name.as_str()).collect()
    }

    /// The value of a field; `Absent` for a name the schema does not
    /// declare. That is a programming error (debug builds assert), but a
    /// release build must not lose a worker to it: the typed getters below
    /// then answer `None` as for a field absent in this version.
    pub fn get(&self, name: &str) -> &Value<'a> {
        static ABSENT: Value<'static> = Value::Absent;
        match self.schema.index_of(name) {
            Some(i) => &self.fields[i],
            None => {
                debug_assert!(false, "no field {name:?} in schema (fields: {:?})", self.field_names());
                &ABSENT
            }
        }
    }

    pub fn get_mut(&mut self, name: &str) -> &mut Value<'a> {
        let i = self.index(name);
        &mut self.fields[i]
    }

    /// Set a declared field (setting an undeclared one is a programming
    /// error: asserted in debug builds, ignored in release).
    pub fn set(&mut self, name: &str, value: Value<'a>) {
        match self.schema.index_of(name) {
            Some(i) => self.fields[i] = value,
            None => debug_assert!(false, "no field {name:?} in schema (fields: {:?})", self.field_names()),
        }
    }

    pub fn i16(&self, name: &str) -> Option<i16> {
        match self.get(name) {
            Value::Int16(v) => Some(*v),
            _ => None,
        }
    }

    pub fn i32(&self, name: &str) -> Option<i32> {
        match self.get(name) {
            Value::Int32(v) => Some(*v),
            _ => None,
        }
    }

    pub fn i64(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Value::Int64(v) => Some(*v),
            _ => None,
        }
    }

    pub fn i8(&self, name: &str) -> Option<i8> {
        match self.get(name) {
            Value::Int8(v) => Some(*v),
            _ => None,
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Value::String(Some(s)) => Some(s),
            _ => None,
        }
    }

    pub fn uuid(&self, name: &str) -> Option<[u8; 16]> {
        match self.get(name) {
            Value::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    /// Elements of an array field; empty for null or absent arrays.
    pub fn array(&self, name: &str) -> &[Value<'a>] {
        match self.get(name) {
            Value::Array(Some(items)) => items,
            _ => &[],
        }
    }

    pub fn array_mut(&mut self, name: &str) -> Option<&mut Vec<Value<'a>>> {
        match self.get_mut(name) {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The struct elements of an array-of-structs field.
    pub fn structs(&self, name: &str) -> impl Iterator<Item = &Struct<'a>> {
        self.array(name).iter().filter_map(Value::as_struct)
    }

    pub fn structs_mut(&mut self, name: &str) -> impl Iterator<Item = &mut Struct<'a>> {
        self.array_mut(name).into_iter().flat_map(|v| v.iter_mut()).filter_map(Value::as_struct_mut)
    }

    pub fn child(&self, name: &str) -> Option<&Struct<'a>> {
        self.get(name).as_struct()
    }

    pub fn child_mut(&mut self, name: &str) -> Option<&mut Struct<'a>> {
        self.get_mut(name).as_struct_mut()
    }

    /// Whether the schema declares `name` (whatever the version).
    pub fn has_field(&self, name: &str) -> bool {
        self.schema.index_of(name).is_some()
    }

    /// A struct of this schema with every field absent; callers fill in the
    /// fields that exist in the version they will encode.
    pub fn empty(schema: &'a StructSchema) -> Struct<'a> {
        Struct { schema, fields: vec![Value::Absent; schema.fields.len()], unknown_tags: Vec::new() }
    }

    /// Deep copy that owns all its data.
    pub fn into_owned(self) -> Struct<'a> {
        Struct {
            schema: self.schema,
            fields: self.fields.into_iter().map(Value::into_owned_value).collect(),
            unknown_tags: self.unknown_tags.into_iter().map(|(t, b)| (t, Cow::Owned(b.into_owned()))).collect(),
        }
    }
}

impl<'a> Value<'a> {
    pub fn as_struct(&self) -> Option<&Struct<'a>> {
        match self {
            Value::Struct(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_struct_mut(&mut self) -> Option<&mut Struct<'a>> {
        match self {
            Value::Struct(s) => Some(s),
            _ => None,
        }
    }

    pub fn str(s: impl Into<String>) -> Value<'a> {
        Value::String(Some(Cow::Owned(s.into())))
    }

    fn into_owned_value(self) -> Value<'a> {
        match self {
            Value::String(Some(s)) => Value::String(Some(Cow::Owned(s.into_owned()))),
            Value::Bytes(Some(b)) => Value::Bytes(Some(Cow::Owned(b.into_owned()))),
            Value::Records(Some(b)) => Value::Records(Some(Cow::Owned(b.into_owned()))),
            Value::Array(Some(items)) => Value::Array(Some(items.into_iter().map(Value::into_owned_value).collect())),
            Value::Struct(s) => Value::Struct(s.into_owned()),
            other => other,
        }
    }
}

/// Most elements an array decode reserves room for before reading them. A
/// count is only checked against the bytes left (one byte per element at
/// least), and each element costs a `Value` of several tens of bytes, so
/// reserving the announced count would let a corrupt count in a large frame
/// allocate ~50 times the frame before its first element fails. Longer
/// arrays grow as their elements actually decode.
pub const MAX_PREALLOCATED_ELEMENTS: usize = 1024;

/// Decode a whole message body of `version`; every byte must be consumed.
pub fn decode<'a>(schema: &'a MessageSchema, version: i16, body: &'a [u8]) -> DecodeResult<Struct<'a>> {
    let (s, trailing) = decode_prefix(schema, version, body)?;
    if trailing > 0 {
        return Err(DecodeError::TrailingBytes { at: body.len() - trailing, left: trailing });
    }
    Ok(s)
}

/// Decode a message body that may be followed by bytes it does not
/// describe, returning how many. Kafka brokers ignore such bytes in
/// requests, and at least one client sends them (librdkafka 2.16 adds three
/// to an all-topics Metadata v12 request), so requests are decoded this way;
/// the frame the client sent is still what goes upstream unless rewritten.
pub fn decode_prefix<'a>(schema: &'a MessageSchema, version: i16, body: &'a [u8]) -> DecodeResult<(Struct<'a>, usize)> {
    if !schema.versions.contains(version) {
        return Err(DecodeError::UnsupportedVersion { api_key: schema.api_key, version });
    }
    let mut r = Reader::new(body);
    let ctx = Ctx { version, flexible: schema.flexible.contains(version) };
    let s = decode_struct(&schema.body, ctx, &mut r)?;
    Ok((s, r.remaining()))
}

/// Encode a message body of `version`, appending to `out`.
pub fn encode(schema: &MessageSchema, version: i16, body: &Struct<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let ctx = Ctx { version, flexible: schema.flexible.contains(version) };
    encode_struct(body, ctx, out)
}

/// A decoded value that cannot be written in the requested version: a
/// programming error in a rewrite, reported with the field's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot encode: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

#[derive(Clone, Copy)]
struct Ctx {
    version: i16,
    flexible: bool,
}

fn decode_struct<'a>(schema: &'a StructSchema, ctx: Ctx, r: &mut Reader<'a>) -> DecodeResult<Struct<'a>> {
    let mut s = Struct::empty(schema);
    for (i, field) in schema.fields.iter().enumerate() {
        if !field.versions.contains(ctx.version) || field.is_tagged_in(ctx.version) {
            continue;
        }
        s.fields[i] = decode_value(field, &field.ty, field.nullable.contains(ctx.version), ctx, r)?;
    }
    if ctx.flexible {
        let at = r.position();
        let count = r.uvarint()? as usize;
        r.checked_count(count, at)?;
        let mut last_tag = None;
        for _ in 0..count {
            let at = r.position();
            let tag = r.uvarint()?;
            if last_tag.is_some_and(|t| tag <= t) {
                return Err(DecodeError::Invalid { at, what: format!("tagged field {tag} out of order") });
            }
            last_tag = Some(tag);
            let size = r.uvarint()? as usize;
            let data = r.take(size)?;
            let known = schema
                .fields
                .iter()
                .position(|f| matches!(f.tagged, Some((t, range)) if t == tag && range.contains(ctx.version)));
            match known {
                Some(i) => {
                    let field = &schema.fields[i];
                    let mut sub = Reader::new(data);
                    s.fields[i] = decode_value(field, &field.ty, field.nullable.contains(ctx.version), ctx, &mut sub)?;
                    if !sub.is_empty() {
                        return Err(DecodeError::TrailingBytes { at: at + sub.position(), left: sub.remaining() });
                    }
                }
                None => s.unknown_tags.push((tag, Cow::Borrowed(data))),
            }
        }
    }
    Ok(s)
}

/// Decode one value of `field`: the field itself (`nullable` as the schema
/// says for this version) or, for arrays, one element (never nullable: a
/// field's nullability is that of the array, not of its elements).
fn decode_value<'a>(
    field: &'a FieldSchema,
    ty: &'a FieldType,
    nullable: bool,
    ctx: Ctx,
    r: &mut Reader<'a>,
) -> DecodeResult<Value<'a>> {
    let at = r.position();
    let null_check = |len: Option<usize>| -> DecodeResult<Option<usize>> {
        if len.is_none() && !nullable {
            return Err(DecodeError::Invalid { at, what: format!("null in non-nullable field {}", field.name) });
        }
        Ok(len)
    };
    Ok(match ty {
        FieldType::Bool => Value::Bool(match r.i8()? {
            0 => false,
            1 => true,
            b => return Err(DecodeError::Invalid { at, what: format!("bool {b} in field {}", field.name) }),
        }),
        FieldType::Int8 => Value::Int8(r.i8()?),
        FieldType::Int16 => Value::Int16(r.i16()?),
        FieldType::Uint16 => Value::Uint16(r.u16()?),
        FieldType::Int32 => Value::Int32(r.i32()?),
        FieldType::Uint32 => Value::Uint32(r.u32()?),
        FieldType::Int64 => Value::Int64(r.i64()?),
        FieldType::Float64 => Value::Float64(r.f64()?),
        FieldType::Uuid => Value::Uuid(r.take(16)?.try_into().expect("16 bytes")),
        FieldType::String => {
            let len = if ctx.flexible { r.compact_len()? } else { r.i16_len()? };
            Value::String(match null_check(len)? {
                Some(n) => Some(Cow::Borrowed(r.string_bytes(n)?)),
                None => None,
            })
        }
        FieldType::Bytes | FieldType::Records => {
            let len = if ctx.flexible { r.compact_len()? } else { r.i32_len()? };
            let data = match null_check(len)? {
                Some(n) => Some(Cow::Borrowed(r.take(n)?)),
                None => None,
            };
            if *ty == FieldType::Bytes {
                Value::Bytes(data)
            } else {
                Value::Records(data)
            }
        }
        FieldType::Array(inner) => {
            let len = if ctx.flexible { r.compact_len()? } else { r.i32_len()? };
            match null_check(len)? {
                None => Value::Array(None),
                Some(n) => {
                    let n = r.checked_count(n, at)?;
                    let mut items = Vec::with_capacity(n.min(MAX_PREALLOCATED_ELEMENTS));
                    for _ in 0..n {
                        items.push(decode_value(field, inner, false, ctx, r)?);
                    }
                    Value::Array(Some(items))
                }
            }
        }
        FieldType::Struct(schema) => {
            // Nullable structs carry a presence byte: -1 null, 1 present.
            if nullable {
                match r.i8()? {
                    -1 => return Ok(Value::NullStruct),
                    1 => {}
                    b => return Err(DecodeError::Invalid { at, what: format!("struct presence byte {b} in field {}", field.name) }),
                }
            }
            Value::Struct(decode_struct(schema, ctx, r)?)
        }
    })
}

fn encode_struct(s: &Struct<'_>, ctx: Ctx, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut tagged: Vec<(u32, Vec<u8>)> = Vec::new();
    for (field, value) in s.schema.fields.iter().zip(&s.fields) {
        if !field.versions.contains(ctx.version) {
            continue;
        }
        if let Some((tag, range)) = field.tagged {
            if range.contains(ctx.version) {
                if *value != Value::Absent {
                    let mut buf = Vec::new();
                    encode_value(field, &field.ty, field.nullable.contains(ctx.version), value, ctx, &mut buf)?;
                    tagged.push((tag, buf));
                }
                continue;
            }
        }
        encode_value(field, &field.ty, field.nullable.contains(ctx.version), value, ctx, out)?;
    }
    if ctx.flexible {
        let mut all: Vec<(u32, &[u8])> = tagged.iter().map(|(t, b)| (*t, b.as_slice())).collect();
        all.extend(s.unknown_tags.iter().map(|(t, b)| (*t, b.as_ref())));
        all.sort_by_key(|(t, _)| *t);
        put_uvarint(out, all.len() as u32);
        for (tag, data) in all {
            put_uvarint(out, tag);
            put_uvarint(out, data.len() as u32);
            out.extend_from_slice(data);
        }
    } else if !s.unknown_tags.is_empty() {
        return Err(EncodeError("tagged fields in a version without tagged fields".into()));
    }
    Ok(())
}

/// Encode one value of `field`; `nullable` as for [`decode_value`].
fn encode_value(
    field: &FieldSchema,
    ty: &FieldType,
    nullable: bool,
    value: &Value<'_>,
    ctx: Ctx,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let wrong = || EncodeError(format!("field {} v{}: value {value:?} does not fit type {ty:?}", field.name, ctx.version));
    let null_ok = || if nullable { Ok(()) } else { Err(EncodeError(format!("null in non-nullable field {}", field.name))) };
    match (ty, value) {
        (FieldType::Bool, Value::Bool(b)) => out.push(*b as u8),
        (FieldType::Int8, Value::Int8(v)) => put_i8(out, *v),
        (FieldType::Int16, Value::Int16(v)) => put_i16(out, *v),
        (FieldType::Uint16, Value::Uint16(v)) => put_u16(out, *v),
        (FieldType::Int32, Value::Int32(v)) => put_i32(out, *v),
        (FieldType::Uint32, Value::Uint32(v)) => put_u32(out, *v),
        (FieldType::Int64, Value::Int64(v)) => put_i64(out, *v),
        (FieldType::Float64, Value::Float64(v)) => put_f64(out, *v),
        (FieldType::Uuid, Value::Uuid(u)) => out.extend_from_slice(u),
        (FieldType::String, Value::String(s)) => {
            if s.is_none() {
                null_ok()?;
            }
            let bytes = s.as_ref().map(|s| s.as_bytes());
            if ctx.flexible {
                put_compact_len(out, bytes.map(<[u8]>::len));
            } else {
                if bytes.is_some_and(|b| b.len() > i16::MAX as usize) {
                    return Err(EncodeError(format!("string too long in field {}", field.name)));
                }
                put_i16(out, bytes.map_or(-1, |b| b.len() as i16));
            }
            out.extend_from_slice(bytes.unwrap_or_default());
        }
        (FieldType::Bytes, Value::Bytes(b)) | (FieldType::Records, Value::Records(b)) => {
            if b.is_none() {
                null_ok()?;
            }
            if ctx.flexible {
                put_compact_len(out, b.as_ref().map(|b| b.len()));
            } else {
                put_i32(out, b.as_ref().map_or(-1, |b| b.len() as i32));
            }
            out.extend_from_slice(b.as_deref().unwrap_or_default());
        }
        (FieldType::Array(inner), Value::Array(items)) => {
            if items.is_none() {
                null_ok()?;
            }
            if ctx.flexible {
                put_compact_len(out, items.as_ref().map(Vec::len));
            } else {
                put_i32(out, items.as_ref().map_or(-1, |v| v.len() as i32));
            }
            for item in items.iter().flatten() {
                encode_value(field, inner, false, item, ctx, out)?;
            }
        }
        (FieldType::Struct(_), Value::Struct(s)) => {
            if nullable {
                put_i8(out, 1);
            }
            encode_struct(s, ctx, out)?
        }
        (FieldType::Struct(_), Value::NullStruct) => {
            null_ok()?;
            put_i8(out, -1);
        }
        _ => return Err(wrong()),
    }
    Ok(())
}

/// A struct whose every field present (and not tagged) in `version` holds
/// its zero value: 0, false, empty string or array, null where nullable.
/// Callers then set the fields that matter; used for messages the proxy
/// writes itself.
pub fn with_defaults(schema: &StructSchema, version: i16) -> Struct<'_> {
    let mut s = Struct::empty(schema);
    for (i, f) in schema.fields.iter().enumerate() {
        if f.versions.contains(version) && !f.is_tagged_in(version) {
            s.fields[i] = zero_value(f, &f.ty, version);
        }
    }
    s
}

fn zero_value<'a>(f: &'a FieldSchema, ty: &'a FieldType, version: i16) -> Value<'a> {
    let nullable = f.nullable.contains(version);
    match ty {
        FieldType::Bool => Value::Bool(false),
        FieldType::Int8 => Value::Int8(0),
        FieldType::Int16 => Value::Int16(0),
        FieldType::Uint16 => Value::Uint16(0),
        FieldType::Int32 => Value::Int32(0),
        FieldType::Uint32 => Value::Uint32(0),
        FieldType::Int64 => Value::Int64(0),
        FieldType::Float64 => Value::Float64(0.0),
        FieldType::Uuid => Value::Uuid([0; 16]),
        FieldType::String if nullable => Value::String(None),
        FieldType::String => Value::String(Some(Cow::Borrowed(""))),
        FieldType::Bytes if nullable => Value::Bytes(None),
        FieldType::Bytes => Value::Bytes(Some(Cow::Borrowed(&[]))),
        FieldType::Records => Value::Records(None),
        FieldType::Array(_) => Value::Array(Some(Vec::new())),
        FieldType::Struct(_) if nullable => Value::NullStruct,
        FieldType::Struct(s) => Value::Struct(with_defaults(s, version)),
    }
}

/// The element schema of an array-of-structs field, to build new elements.
pub fn element_schema<'s>(schema: &'s StructSchema, field: &str) -> &'s StructSchema {
    let f = &schema.fields[schema.index_of(field).unwrap_or_else(|| panic!("no field {field}"))];
    match &f.ty {
        FieldType::Array(inner) => match inner.as_ref() {
            FieldType::Struct(s) => s,
            other => panic!("field {field} is an array of {other:?}, not of structs"),
        },
        FieldType::Struct(s) => s,
        other => panic!("field {field} is {other:?}, not a struct"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::fields::{describe_topic_partitions_request as dtp, metadata_request};
    use crate::kafka::schema::{registry, MessageKind};

    /// A nullable array's elements carry no presence byte: MetadataRequest v1
    /// `topics` (nullable from v1) with the topics "a" and "bc" is the array
    /// length and then the two strings, as Kafka writes it.
    #[test]
    fn elements_of_a_nullable_array_of_structs_have_no_presence_byte() {
        let schema = registry().get(3, MessageKind::Request).unwrap();
        let bytes = [0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        let decoded = decode(schema, 1, &bytes).unwrap();
        let names: Vec<_> = decoded.iter(metadata_request::TOPICS).map(|t| t.read(metadata_request::topics::NAME).unwrap()).collect();
        assert_eq!(names, ["a", "bc"]);
        let mut out = Vec::new();
        encode(schema, 1, &decoded, &mut out).unwrap();
        assert_eq!(out, bytes);
    }

    /// A nullable struct field (not an array) does carry one.
    #[test]
    fn a_nullable_struct_has_a_presence_byte() {
        let schema = registry().get(75, MessageKind::Request).unwrap();
        let null_cursor = [1, 0, 0, 0, 10, 0xff, 0];
        assert_eq!(*decode(schema, 0, &null_cursor).unwrap().value(dtp::CURSOR), Value::NullStruct);
        let cursor = [1, 0, 0, 0, 10, 1, 2, b'x', 0, 0, 0, 3, 0, 0];
        let decoded = decode(schema, 0, &cursor).unwrap();
        assert_eq!(decoded.read(dtp::CURSOR).unwrap().read(dtp::cursor::PARTITION_INDEX), Some(3));
        let mut out = Vec::new();
        encode(schema, 0, &decoded, &mut out).unwrap();
        assert_eq!(out, cursor);
    }
}
