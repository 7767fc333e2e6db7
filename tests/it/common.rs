//! Shared by the codec tests: a small seeded PRNG and a generator of random
//! message values shaped by a schema.

use std::borrow::Cow;

use kpr_proxy::kafka::codec::{Struct, Value};
use kpr_proxy::kafka::schema::{registry, FieldType, MessageKind, MessageSchema, StructSchema};

/// SplitMix64: tiny, seedable, good enough to shape test values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let n = self.below(max_len as u64 + 1) as usize;
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Strings worth round-tripping: empty, ASCII, multi-byte UTF-8 of every
/// width, and a few that look like framing.
pub const STRINGS: &[&str] = &[
    "",
    "a",
    "topic-0",
    "__consumer_offsets",
    "grüße",
    "日本語のトピック",
    "🦀 crab",
    "\u{0}nul",
    "tab\tand\nnewline",
    "κόσμε",
];

pub fn random_string(rng: &mut Rng) -> String {
    if rng.chance(1, 4) {
        // Random UTF-8 of random length, including the 2-, 3- and 4-byte forms.
        let n = rng.below(12) as usize;
        (0..n)
            .map(|_| match rng.below(4) {
                0 => char::from_u32(0x20 + rng.below(0x5f) as u32).unwrap(),
                1 => char::from_u32(0xa0 + rng.below(0x700) as u32).unwrap(),
                2 => char::from_u32(0x4e00 + rng.below(0x5000) as u32).unwrap(),
                _ => char::from_u32(0x1f300 + rng.below(0x300) as u32).unwrap(),
            })
            .collect()
    } else {
        rng.pick(STRINGS).to_string()
    }
}

/// Every declared message and every version it decodes, in a stable order.
pub fn all_messages() -> Vec<(&'static MessageSchema, i16)> {
    let mut out: Vec<(&'static MessageSchema, i16)> = registry()
        .iter()
        .flat_map(|m| (m.versions.min..=m.versions.max).map(move |v| (m, v)))
        .collect();
    out.sort_by_key(|(m, v)| (m.api_key, m.kind == MessageKind::Response, *v));
    out
}

/// How the generator shapes values.
#[derive(Clone, Copy)]
pub struct GenOptions {
    /// Insert random tagged fields the schema does not declare (flexible
    /// versions only).
    pub unknown_tags: bool,
    /// Longest array generated.
    pub max_array: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions { unknown_tags: true, max_array: 3 }
    }
}

pub fn random_message(rng: &mut Rng, schema: &'static MessageSchema, version: i16, opts: GenOptions) -> Struct<'static> {
    let flexible = schema.flexible.contains(version);
    random_struct(rng, &schema.body, version, flexible, opts)
}

pub fn random_struct(
    rng: &mut Rng,
    schema: &'static StructSchema,
    version: i16,
    flexible: bool,
    opts: GenOptions,
) -> Struct<'static> {
    let mut s = Struct::empty(schema);
    for (i, field) in schema.fields.iter().enumerate() {
        if !field.versions.contains(version) {
            continue;
        }
        if field.is_tagged_in(version) && rng.chance(1, 2) {
            continue; // a tagged field that was not sent
        }
        s.fields[i] = random_value(rng, &field.ty, field.nullable.contains(version), version, flexible, opts);
    }
    if flexible && opts.unknown_tags {
        // Tags this struct does not know in this version: unknown to the
        // codec, to be carried through untouched. Tags the struct declares
        // for other versions only (Fetch's tag 0 before v16) count as unknown.
        let known: Vec<u32> = schema
            .fields
            .iter()
            .filter(|f| f.versions.contains(version) && f.is_tagged_in(version))
            .filter_map(|f| f.tagged.map(|(t, _)| t))
            .collect();
        let n = rng.below(3);
        let mut tags: Vec<u32> = Vec::new();
        for _ in 0..n {
            let tag = match rng.below(4) {
                0 => rng.below(8) as u32,
                1 => rng.below(300) as u32,
                2 => rng.below(1 << 21) as u32,
                _ => u32::MAX - rng.below(3) as u32,
            };
            if !known.contains(&tag) && !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        tags.sort_unstable();
        s.unknown_tags = tags.into_iter().map(|t| (t, Cow::Owned(rng.bytes(6)))).collect();
    }
    s
}

pub fn random_value(
    rng: &mut Rng,
    ty: &'static FieldType,
    nullable: bool,
    version: i16,
    flexible: bool,
    opts: GenOptions,
) -> Value<'static> {
    let null = nullable && rng.chance(1, 4);
    match ty {
        FieldType::Bool => Value::Bool(rng.chance(1, 2)),
        FieldType::Int8 => Value::Int8(rng.next_u64() as i8),
        FieldType::Int16 => Value::Int16(edge_or_random(rng) as i16),
        FieldType::Uint16 => Value::Uint16(edge_or_random(rng) as u16),
        FieldType::Int32 => Value::Int32(edge_or_random(rng) as i32),
        FieldType::Uint32 => Value::Uint32(edge_or_random(rng) as u32),
        FieldType::Int64 => Value::Int64(edge_or_random(rng)),
        // Finite values only: NaN is not equal to itself.
        FieldType::Float64 => Value::Float64((rng.next_u64() as i64 as f64) / 1024.0),
        FieldType::Uuid => {
            let mut u = [0u8; 16];
            u.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
            Value::Uuid(u)
        }
        FieldType::String if null => Value::String(None),
        FieldType::String => Value::String(Some(Cow::Owned(random_string(rng)))),
        FieldType::Bytes if null => Value::Bytes(None),
        FieldType::Bytes => Value::Bytes(Some(Cow::Owned(rng.bytes(8)))),
        FieldType::Records if null => Value::Records(None),
        FieldType::Records => Value::Records(Some(Cow::Owned(rng.bytes(24)))),
        FieldType::Array(_) if null => Value::Array(None),
        FieldType::Array(inner) => {
            let n = rng.below(opts.max_array + 1);
            // The elements of a nullable array are not themselves nullable.
            Value::Array(Some((0..n).map(|_| random_value(rng, inner, false, version, flexible, opts)).collect()))
        }
        FieldType::Struct(_) if null => Value::NullStruct,
        FieldType::Struct(s) => Value::Struct(random_struct(rng, s, version, flexible, opts)),
    }
}

/// Mostly small numbers, sometimes the extremes of each width.
fn edge_or_random(rng: &mut Rng) -> i64 {
    match rng.below(6) {
        0 => *rng.pick(&[0, -1, 1, i16::MIN as i64, i16::MAX as i64, i32::MIN as i64, i32::MAX as i64, i64::MIN, i64::MAX]),
        1 => rng.next_u64() as i64,
        _ => rng.below(1000) as i64,
    }
}

/// Every unknown tag in a decoded tree, with the path of the struct it was in.
pub fn unknown_tags(s: &Struct<'_>, path: &str, out: &mut Vec<(String, u32, Vec<u8>)>) {
    for (t, data) in &s.unknown_tags {
        out.push((path.to_string(), *t, data.to_vec()));
    }
    for (f, v) in s.schema.fields.iter().zip(&s.fields) {
        walk_value(v, &format!("{path}.{}", f.name), out);
    }
}

fn walk_value(v: &Value<'_>, path: &str, out: &mut Vec<(String, u32, Vec<u8>)>) {
    match v {
        Value::Struct(s) => unknown_tags(s, path, out),
        Value::Array(Some(items)) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
