//! The message schemas the proxy decodes, declared one line per field in
//! `messages.def` and parsed once at start.
//!
//! The declaration language, written for this project from Kafka's message
//! specifications (the test `schema_matches_kafka_specs` cross-checks it):
//!
//! ```text
//! message ProduceRequest key=0 versions=3-11 flexible=9+
//!   transactional_id string versions=3+ nullable=3+
//!   topic_data []struct
//!     name string
//!     partition_data []struct
//!       index int32
//!       records records nullable=0+
//! ```
//!
//! A field line is `NAME TYPE [versions=R] [nullable=R] [tag=N tagged=R]`.
//! Types: `bool int8 int16 uint16 int32 uint32 int64 float64 string bytes
//! records uuid struct`, and `[]T` for arrays. A `struct` or `[]struct`
//! field's members follow, indented two spaces more. Version ranges are `N`,
//! `N-M`, `N+` or `none`; a field without `versions=` exists in every
//! version. `versions=` on the message line is the range the proxy decodes.

use std::collections::HashMap;
use std::sync::LazyLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

impl VersionRange {
    pub const ALL: VersionRange = VersionRange { min: 0, max: i16::MAX };
    pub const NONE: VersionRange = VersionRange { min: 1, max: 0 };

    pub fn contains(&self, v: i16) -> bool {
        self.min <= v && v <= self.max
    }

    pub fn is_empty(&self) -> bool {
        self.min > self.max
    }

    pub fn parse(s: &str) -> Result<VersionRange, String> {
        let num = |t: &str| t.parse::<i16>().map_err(|_| format!("bad version number {t:?}"));
        if s == "none" {
            Ok(VersionRange::NONE)
        } else if let Some(min) = s.strip_suffix('+') {
            Ok(VersionRange { min: num(min)?, max: i16::MAX })
        } else if let Some((a, b)) = s.split_once('-') {
            Ok(VersionRange { min: num(a)?, max: num(b)? })
        } else {
            let v = num(s)?;
            Ok(VersionRange { min: v, max: v })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Request,
    Response,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    Bool,
    Int8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Float64,
    String,
    Bytes,
    Records,
    Uuid,
    Struct(StructSchema),
    Array(Box<FieldType>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSchema {
    pub name: String,
    pub ty: FieldType,
    pub versions: VersionRange,
    pub nullable: VersionRange,
    /// `(tag, versions in which the field is tagged)`.
    pub tagged: Option<(u32, VersionRange)>,
}

impl FieldSchema {
    pub fn is_tagged_in(&self, version: i16) -> bool {
        matches!(self.tagged, Some((_, r)) if r.contains(version))
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StructSchema {
    pub fields: Vec<FieldSchema>,
}

impl StructSchema {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageSchema {
    pub name: String,
    pub api_key: i16,
    pub kind: MessageKind,
    /// The versions the proxy decodes.
    pub versions: VersionRange,
    pub flexible: VersionRange,
    pub body: StructSchema,
}

/// All declared messages, by (api key, kind).
pub struct Registry {
    messages: HashMap<(i16, MessageKind), MessageSchema>,
}

impl Registry {
    pub fn get(&self, api_key: i16, kind: MessageKind) -> Option<&MessageSchema> {
        self.messages.get(&(api_key, kind))
    }

    pub fn iter(&self) -> impl Iterator<Item = &MessageSchema> {
        self.messages.values()
    }

    /// The version range the proxy itself handles for an API, if any.
    pub fn supported_versions(&self, api_key: i16) -> Option<VersionRange> {
        let req = self.get(api_key, MessageKind::Request)?;
        let resp = self.get(api_key, MessageKind::Response)?;
        Some(VersionRange {
            min: req.versions.min.max(resp.versions.min),
            max: req.versions.max.min(resp.versions.max),
        })
    }
}

const DEFINITIONS: &str = include_str!("messages.def");

static REGISTRY: LazyLock<Registry> =
    LazyLock::new(|| parse_definitions(DEFINITIONS).unwrap_or_else(|e| panic!("messages.def: {e}")));

/// The schemas compiled into the binary. A unit test parses them, so a
/// malformed table never reaches a release.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

pub fn parse_definitions(text: &str) -> Result<Registry, String> {
    let mut messages = HashMap::new();
    let lines: Vec<(usize, usize, &str)> = text
        .lines()
        .enumerate()
        .filter_map(|(n, raw)| {
            let line = raw.split('#').next().unwrap_or("").trim_end();
            if line.trim().is_empty() {
                return None;
            }
            let indent = line.len() - line.trim_start().len();
            Some((n + 1, indent, line.trim_start()))
        })
        .collect();
    let mut i = 0;
    while i < lines.len() {
        let (lineno, indent, line) = lines[i];
        let err = |m: String| format!("line {lineno}: {m}");
        if indent != 0 || !line.starts_with("message ") {
            return Err(err(format!("expected a `message` line, found {line:?}")));
        }
        let mut words = line.split_whitespace().skip(1);
        let name = words.next().ok_or_else(|| err("message without a name".into()))?.to_string();
        let kind = if name.ends_with("Request") {
            MessageKind::Request
        } else if name.ends_with("Response") {
            MessageKind::Response
        } else {
            return Err(err(format!("message name {name} must end in Request or Response")));
        };
        let (mut key, mut versions, mut flexible) = (None, None, VersionRange::NONE);
        for w in words {
            let (k, v) = w.split_once('=').ok_or_else(|| err(format!("expected key=value, found {w:?}")))?;
            match k {
                "key" => key = Some(v.parse::<i16>().map_err(|_| err(format!("bad api key {v:?}")))?),
                "versions" => versions = Some(VersionRange::parse(v).map_err(err)?),
                "flexible" => flexible = VersionRange::parse(v).map_err(err)?,
                _ => return Err(err(format!("unknown message attribute {k:?}"))),
            }
        }
        let api_key = key.ok_or_else(|| err("message without key=".into()))?;
        let versions = versions.ok_or_else(|| err("message without versions=".into()))?;
        i += 1;
        let body = parse_struct(&lines, &mut i, 2)?;
        let schema = MessageSchema { name, api_key, kind, versions, flexible, body };
        if messages.insert((api_key, kind), schema).is_some() {
            return Err(err(format!("second {kind:?} for api key {api_key}")));
        }
    }
    Ok(Registry { messages })
}

fn parse_struct(lines: &[(usize, usize, &str)], i: &mut usize, indent: usize) -> Result<StructSchema, String> {
    let mut fields = Vec::new();
    while *i < lines.len() {
        let (lineno, ind, line) = lines[*i];
        if ind < indent {
            break;
        }
        let err = |m: String| format!("line {lineno}: {m}");
        if ind != indent {
            return Err(err(format!("indented {ind} spaces, expected {indent}")));
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let ty_word = words.next().ok_or_else(|| err(format!("field {name} has no type")))?;
        let mut field = FieldSchema {
            name,
            ty: FieldType::Bool,
            versions: VersionRange::ALL,
            nullable: VersionRange::NONE,
            tagged: None,
        };
        let (mut tag, mut tagged) = (None, None);
        for w in words {
            let (k, v) = w.split_once('=').ok_or_else(|| err(format!("expected key=value, found {w:?}")))?;
            match k {
                "versions" => field.versions = VersionRange::parse(v).map_err(err)?,
                "nullable" => field.nullable = VersionRange::parse(v).map_err(err)?,
                "tag" => tag = Some(v.parse::<u32>().map_err(|_| err(format!("bad tag {v:?}")))?),
                "tagged" => tagged = Some(VersionRange::parse(v).map_err(err)?),
                _ => return Err(err(format!("unknown field attribute {k:?}"))),
            }
        }
        field.tagged = match (tag, tagged) {
            (Some(t), Some(r)) => Some((t, r)),
            (None, None) => None,
            _ => return Err(err("tag= and tagged= go together".into())),
        };
        *i += 1;
        field.ty = parse_type(ty_word, lines, i, indent + 2).map_err(err)?;
        fields.push(field);
    }
    Ok(StructSchema { fields })
}

fn parse_type(word: &str, lines: &[(usize, usize, &str)], i: &mut usize, indent: usize) -> Result<FieldType, String> {
    if let Some(inner) = word.strip_prefix("[]") {
        return Ok(FieldType::Array(Box::new(parse_type(inner, lines, i, indent)?)));
    }
    Ok(match word {
        "bool" => FieldType::Bool,
        "int8" => FieldType::Int8,
        "int16" => FieldType::Int16,
        "uint16" => FieldType::Uint16,
        "int32" => FieldType::Int32,
        "uint32" => FieldType::Uint32,
        "int64" => FieldType::Int64,
        "float64" => FieldType::Float64,
        "string" => FieldType::String,
        "bytes" => FieldType::Bytes,
        "records" => FieldType::Records,
        "uuid" => FieldType::Uuid,
        "struct" => FieldType::Struct(parse_struct(lines, i, indent)?),
        other => return Err(format!("unknown type {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ranges() {
        assert_eq!(VersionRange::parse("3+").unwrap(), VersionRange { min: 3, max: i16::MAX });
        assert_eq!(VersionRange::parse("0-4").unwrap(), VersionRange { min: 0, max: 4 });
        assert_eq!(VersionRange::parse("7").unwrap(), VersionRange { min: 7, max: 7 });
        assert!(VersionRange::parse("none").unwrap().is_empty());
        assert!(VersionRange::parse("x").is_err());
    }

    #[test]
    fn nested_structs_and_tags_parse() {
        let reg = parse_definitions(
            "message DemoRequest key=99 versions=0-2 flexible=1+\n\
             \x20 name string nullable=0+\n\
             \x20 items []struct versions=1+\n\
             \x20   id int32\n\
             \x20   ids []int32\n\
             \x20 hint struct versions=2+ tag=0 tagged=2+\n\
             \x20   node int32\n",
        )
        .unwrap();
        let m = reg.get(99, MessageKind::Request).unwrap();
        assert_eq!(m.body.fields.len(), 3);
        let FieldType::Array(inner) = &m.body.fields[1].ty else { panic!() };
        let FieldType::Struct(s) = inner.as_ref() else { panic!() };
        assert_eq!(s.fields[1].ty, FieldType::Array(Box::new(FieldType::Int32)));
        assert_eq!(m.body.fields[2].tagged, Some((0, VersionRange { min: 2, max: i16::MAX })));
    }

    #[test]
    fn malformed_definitions_name_the_line() {
        let e = parse_definitions("message XRequest key=1 versions=0\n  a wat\n").err().unwrap();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse_definitions("message XRequest key=1 versions=0\n   a int8\n").err().unwrap();
        assert!(e.contains("indented 3"), "{e}");
    }

    #[test]
    fn compiled_in_definitions_parse() {
        let _ = registry();
    }
}
