//! Typed field keys, generated at build time from `messages.def` (see
//! `build.rs`): one module per message, one nested module per struct field,
//! one `pub const` per field, e.g. `produce_request::ACKS: Field<i16>` or
//! `produce_request::topic_data::partition_data::INDEX: Field<i32>`.
//!
//! A misspelt key or a read of the wrong type does not compile:
//!
//! ```ignore
//! let acks: Option<i16> = req.read(produce_request::ACKS);
//! for t in req.iter(produce_request::TOPIC_DATA) { .. }
//! p.write(produce_response::responses::partition_responses::ERROR_CODE, code);
//! ```
//!
//! The decoded value tree (`codec::Struct`) stays dynamic, so pass-through
//! and unknown tagged fields are untouched. A key carries its field's
//! position in the schema: every decoded or built `Struct` has one slot per
//! declared field whatever the version (absent ones hold `Value::Absent`),
//! so that position is the slot. The key's name is still compared with the
//! schema's before the slot is used, so a key of another message (where the
//! same name may sit elsewhere) falls back to a lookup by name and reads
//! what a string lookup would have read.
//!
//! Every read answers `Option`, `None` when the field is absent in this
//! version, as the string getters do.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use super::api::ErrorCode;
use super::codec::{Struct, Value};
use super::schema::StructSchema;

/// A field of one struct of one message, read as `T` (one of [`kinds`]).
pub struct Field<T> {
    name: &'static str,
    index: usize,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Field<T> {
    pub const fn new(name: &'static str, index: usize) -> Field<T> {
        Field { name, index, _kind: PhantomData }
    }

    /// A key known only by name (looked up by name on every use), for
    /// callers that still pass names around at run time.
    pub const fn named(name: &'static str) -> Field<T> {
        Field::new(name, usize::MAX)
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// This key without its position, for code that reads the field of
    /// that name in several messages (endpoints' `host` and `port`, say).
    pub const fn by_name(self) -> Field<T> {
        Field::named(self.name)
    }
}

impl<T> Clone for Field<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Field<T> {}

impl<T> fmt::Debug for Field<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Field({})", self.name)
    }
}

/// What a field reads as. Scalars read as themselves (`i32`, `bool`, ...);
/// the rest are markers.
pub mod kinds {
    use std::marker::PhantomData;

    pub use super::Field;

    /// A string; reads as `&str` (`None` when null).
    pub struct Str;
    /// A bytes field; reads as `&[u8]` (`None` when null).
    pub struct Bytes;
    /// A record set; reads as `&[u8]` (`None` when null).
    pub struct Records;
    /// A UUID; reads as `[u8; 16]`.
    pub struct Uuid;
    /// A struct field; reads as `&Struct`.
    pub struct Child;
    /// An array; reads as its elements (`None` when null).
    pub struct Array<T>(PhantomData<T>);
}

use kinds::{Array, Bytes, Child, Records, Str, Uuid};

/// How a kind of field reads from a decoded value.
pub trait Kind {
    type Out<'s, 'a: 's>;
    fn read<'s, 'a: 's>(v: &'s Value<'a>) -> Option<Self::Out<'s, 'a>>;
}

/// How a kind of field is written from a `V`.
pub trait Accepts<'a, V> {
    fn value(v: V) -> Value<'a>;
}

macro_rules! scalar_kinds {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl Kind for $t {
            type Out<'s, 'a: 's> = $t;
            fn read<'s, 'a: 's>(v: &'s Value<'a>) -> Option<$t> {
                match v {
                    Value::$variant(x) => Some(*x),
                    _ => None,
                }
            }
        }
        impl<'a> Accepts<'a, $t> for $t {
            fn value(v: $t) -> Value<'a> {
                Value::$variant(v)
            }
        }
    )*};
}

scalar_kinds! {
    bool => Bool, i8 => Int8, i16 => Int16, u16 => Uint16, i32 => Int32,
    u32 => Uint32, i64 => Int64, f64 => Float64,
}

impl Kind for Uuid {
    type Out<'s, 'a: 's> = [u8; 16];
    fn read<'s, 'a: 's>(v: &'s Value<'a>) -> Option<[u8; 16]> {
        match v {
            Value::Uuid(u) => Some(*u),
            _ => None,
        }
    }
}

impl<'a> Accepts<'a, [u8; 16]> for Uuid {
    fn value(v: [u8; 16]) -> Value<'a> {
        Value::Uuid(v)
    }
}

/// Error codes are written as their `i16`.
impl<'a> Accepts<'a, ErrorCode> for i16 {
    fn value(v: ErrorCode) -> Value<'a> {
        Value::Int16(v.code())
    }
}

impl Kind for Str {
    type Out<'s, 'a: 's> = &'s str;
    fn read<'s, 'a: 's>(v: &'s Value<'a>) -> Option<&'s str> {
        match v {
            Value::String(Some(s)) => Some(s),
            _ => None,
        }
    }
}

impl<'a, S: Into<Cow<'a, str>>> Accepts<'a, S> for Str {
    fn value(v: S) -> Value<'a> {
        Value::String(Some(v.into()))
    }
}

macro_rules! byte_kinds {
    ($($t:ty => $variant:ident),*) => {$(
        impl Kind for $t {
            type Out<'s, 'a: 's> = &'s [u8];
            fn read<'s, 'a: 's>(v: &'s Value<'a>) -> Option<&'s [u8]> {
                match v {
                    Value::$variant(Some(b)) => Some(b),
                    _ => None,
                }
            }
        }
        /// `None` writes null.
        impl<'a> Accepts<'a, Option<Cow<'a, [u8]>>> for $t {
            fn value(v: Option<Cow<'a, [u8]>>) -> Value<'a> {
                Value::$variant(v)
            }
        }
    )*};
}

byte_kinds!(Bytes => Bytes, Records => Records);

impl Kind for Child {
    type Out<'s, 'a: 's> = &'s Struct<'a>;
    fn read<'s, 'a: 's>(v: &'s Value<'a>) -> Option<&'s Struct<'a>> {
        v.as_struct()
    }
}

impl<'a> Accepts<'a, Struct<'a>> for Child {
    fn value(v: Struct<'a>) -> Value<'a> {
        Value::Struct(v)
    }
}

impl<T> Kind for Array<T> {
    type Out<'s, 'a: 's> = &'s [Value<'a>];
    fn read<'s, 'a: 's>(v: &'s Value<'a>) -> Option<&'s [Value<'a>]> {
        match v {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

/// A whole array of already built elements (never null).
impl<'a, T> Accepts<'a, Vec<Value<'a>>> for Array<T> {
    fn value(v: Vec<Value<'a>>) -> Value<'a> {
        Value::Array(Some(v))
    }
}

impl<'a> Accepts<'a, Vec<Struct<'a>>> for Array<Child> {
    fn value(v: Vec<Struct<'a>>) -> Value<'a> {
        Value::Array(Some(v.into_iter().map(Value::Struct).collect()))
    }
}

impl<'a> Struct<'a> {
    /// The slot of `f`: its generated position when the schema agrees on
    /// the name there, else a lookup by name (asserted in debug builds, as
    /// for string names).
    fn slot<T>(&self, f: Field<T>) -> Option<usize> {
        match self.schema.fields.get(f.index) {
            Some(declared) if declared.name == f.name => Some(f.index),
            _ => {
                let found = self.schema.index_of(f.name);
                debug_assert!(found.is_some(), "no field {:?} in schema", f.name);
                found
            }
        }
    }

    /// Whether the schema declares `f` (whatever the version).
    pub fn has<T>(&self, f: Field<T>) -> bool {
        matches!(self.schema.fields.get(f.index), Some(d) if d.name == f.name) || self.schema.index_of(f.name).is_some()
    }

    /// The field's value; `None` when absent in this version (or null).
    pub fn read<'s, T: Kind>(&'s self, f: Field<T>) -> Option<T::Out<'s, 'a>> {
        T::read(&self.fields[self.slot(f)?])
    }

    /// Set a field from a typed value.
    pub fn write<T: Accepts<'a, V>, V>(&mut self, f: Field<T>, v: V) {
        self.put(f, T::value(v));
    }

    /// Set a field from a raw value (a null, or a value copied from
    /// another struct).
    pub fn put<T>(&mut self, f: Field<T>, v: Value<'a>) {
        if let Some(i) = self.slot(f) {
            self.fields[i] = v;
        }
    }

    /// Set a field only where `version` has it as a regular (not tagged)
    /// field; a no-op otherwise.
    pub fn write_in<T: Accepts<'a, V>, V>(&mut self, f: Field<T>, v: V, version: i16) {
        self.put_in(f, T::value(v), version);
    }

    /// `put` where `version` has the field as a regular (not tagged) field
    /// (a null, say); a no-op otherwise.
    pub fn put_in<T>(&mut self, f: Field<T>, v: Value<'a>, version: i16) {
        if let Some(i) = self.slot(f) {
            let declared = &self.schema.fields[i];
            if declared.versions.contains(version) && !declared.is_tagged_in(version) {
                self.fields[i] = v;
            }
        }
    }

    /// The raw value of a field (`Absent` when the schema lacks it).
    pub fn value<T>(&self, f: Field<T>) -> &Value<'a> {
        static ABSENT: Value<'static> = Value::Absent;
        self.slot(f).map_or(&ABSENT, |i| &self.fields[i])
    }

    pub fn value_mut<T>(&mut self, f: Field<T>) -> Option<&mut Value<'a>> {
        let i = self.slot(f)?;
        Some(&mut self.fields[i])
    }

    /// The elements of an array field; empty when null or absent.
    pub fn items<T>(&self, f: Field<Array<T>>) -> &[Value<'a>] {
        self.read(f).unwrap_or_default()
    }

    pub fn items_mut<T>(&mut self, f: Field<Array<T>>) -> Option<&mut Vec<Value<'a>>> {
        match self.value_mut(f)? {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The elements of an array-of-structs field.
    pub fn iter(&self, f: Field<Array<Child>>) -> impl Iterator<Item = &Struct<'a>> {
        self.items(f).iter().filter_map(Value::as_struct)
    }

    pub fn iter_mut(&mut self, f: Field<Array<Child>>) -> impl Iterator<Item = &mut Struct<'a>> {
        self.items_mut(f).into_iter().flat_map(|v| v.iter_mut()).filter_map(Value::as_struct_mut)
    }

    pub fn read_mut(&mut self, f: Field<Child>) -> Option<&mut Struct<'a>> {
        self.value_mut(f)?.as_struct_mut()
    }
}

/// Fields whose members have a schema of their own: structs and arrays of
/// structs.
pub trait Nested {}
impl Nested for Child {}
impl Nested for Array<Child> {}

/// The schema of the members of `f` (a field of `schema`), to build new
/// elements or children.
pub fn members<T: Nested>(schema: &StructSchema, f: Field<T>) -> &StructSchema {
    super::codec::element_schema(schema, f.name)
}

include!(concat!(env!("OUT_DIR"), "/fields.rs"));

#[cfg(test)]
mod tests;
