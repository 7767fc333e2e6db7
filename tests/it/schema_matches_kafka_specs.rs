//! Cross-checks `src/kafka/messages.def` against Apache Kafka's own message
//! specifications (the `clients/src/main/resources/common/message/*.json`
//! files), version by version: for every declared message and every version
//! it decodes, the fields present, in order, with their names, types,
//! nullability and tagged-field numbers, recursively through structs.
//!
//! The specs are looked up in `$KPR_KAFKA_SPECS`, else in a
//! `shared/kafka-protocol/message` directory beside the checkout or beside
//! any of its parents, else beside the repository it was cloned from (a
//! local path: a clone in /tmp of a checkout that sits next to `shared/`
//! finds it too). They are reference material kept outside the crate; when
//! they cannot be found the tests fail (they do not skip), saying where they
//! looked.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use kpr_proxy::kafka::schema::{
    parse_definitions, registry, FieldSchema, FieldType, MessageKind, MessageSchema, StructSchema, VersionRange,
};
use serde::Deserialize;

/// The APIs the proxy decodes: (name, api key, first decoded version). Produce
/// and Fetch start at the first version carrying v2 record batches.
const APIS: &[(&str, i16, i16)] = &[
    ("Produce", 0, 3),
    ("Fetch", 1, 4),
    ("ListOffsets", 2, 0),
    ("Metadata", 3, 0),
    ("OffsetCommit", 8, 0),
    ("OffsetFetch", 9, 0),
    ("FindCoordinator", 10, 0),
    ("JoinGroup", 11, 0),
    ("Heartbeat", 12, 0),
    ("LeaveGroup", 13, 0),
    ("SyncGroup", 14, 0),
    ("DescribeGroups", 15, 0),
    ("ListGroups", 16, 0),
    ("SaslHandshake", 17, 0),
    ("ApiVersions", 18, 0),
    ("CreateTopics", 19, 0),
    ("DeleteTopics", 20, 0),
    ("DeleteRecords", 21, 0),
    ("InitProducerId", 22, 0),
    ("OffsetForLeaderEpoch", 23, 0),
    ("AddPartitionsToTxn", 24, 0),
    ("AddOffsetsToTxn", 25, 0),
    ("EndTxn", 26, 0),
    ("TxnOffsetCommit", 28, 0),
    ("DescribeConfigs", 32, 0),
    ("SaslAuthenticate", 36, 0),
    ("CreatePartitions", 37, 0),
    ("DeleteGroups", 42, 0),
    ("IncrementalAlterConfigs", 44, 0),
    ("OffsetDelete", 47, 0),
    ("DescribeCluster", 60, 0),
    ("DescribeProducers", 61, 0),
    ("DescribeTopicPartitions", 75, 0),
];

/// Field attributes in Kafka's specs that do not change the wire format and
/// so have no counterpart in messages.def. Anything else unknown is reported.
const IGNORED_FIELD_ATTRIBUTES: &[&str] = &["about", "default", "ignorable", "entityType", "mapKey", "zeroCopy"];

const PRIMITIVES: &[&str] =
    &["bool", "int8", "int16", "uint16", "int32", "uint32", "int64", "float64", "string", "bytes", "records", "uuid"];

// ---------------------------------------------------------------------------
// Kafka's spec files

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    api_key: Option<i16>,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    valid_versions: String,
    flexible_versions: String,
    #[serde(default)]
    fields: Vec<SpecField>,
    #[serde(default)]
    common_structs: Vec<SpecStruct>,
}

#[derive(Debug, Deserialize)]
struct SpecStruct {
    name: String,
    fields: Vec<SpecField>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecField {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    versions: String,
    nullable_versions: Option<String>,
    tagged_versions: Option<String>,
    tag: Option<u32>,
    flexible_versions: Option<String>,
    fields: Option<Vec<SpecField>>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml::Value>,
}

fn specs_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KPR_KAFKA_SPECS") {
        let dir = PathBuf::from(d);
        assert!(dir.is_dir(), "Kafka's message specs (*.json) not found in {} ($KPR_KAFKA_SPECS)", dir.display());
        return dir;
    }
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![checkout.clone()];
    roots.extend(cloned_from(&checkout));
    let candidates: Vec<PathBuf> = roots
        .iter()
        .flat_map(|root| root.ancestors().skip(1).map(|a| a.join("shared/kafka-protocol/message")))
        .collect();
    match candidates.iter().find(|c| c.is_dir()) {
        Some(dir) => dir.clone(),
        None => panic!(
            "Kafka's message specs (*.json) not found; looked in:\n  {}\n(set KPR_KAFKA_SPECS to the directory)",
            candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join("\n  ")
        ),
    }
}

/// The local repository `checkout` was cloned from, if its origin is a path.
fn cloned_from(checkout: &std::path::Path) -> Option<PathBuf> {
    let out = std::process::Command::new("git")
        .args(["config", "--get", "remote.origin.url"])
        .current_dir(checkout)
        .output()
        .ok()?;
    let url = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(url.trim().strip_prefix("file://").unwrap_or(url.trim()));
    let path = if path.is_absolute() { path } else { checkout.join(path) };
    path.is_dir().then(|| path.canonicalize().unwrap_or(path))
}

/// Kafka's spec files are JSON preceded and interspersed with `//` comment
/// lines; without those, JSON is valid YAML.
fn load_spec(name: &str) -> Result<Spec, String> {
    let path = specs_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| format!("{l}\n"))
        .collect();
    let tree: Tree = serde_yaml::from_str(&json).map_err(|e| format!("{}: {e}", path.display()))?;
    let value = tree.into_value("").map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
}

/// A parsed spec file that still has repeated keys: Kafka's own
/// DescribeTopicPartitions specs give `"versions"` twice for one field, which
/// Kafka's JSON reader accepts but serde_yaml's maps and derived structs
/// reject. Repeats with the same value are merged; differing ones are errors.
enum Tree {
    Leaf(serde_yaml::Value),
    Seq(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

impl Tree {
    fn into_value(self, path: &str) -> Result<serde_yaml::Value, String> {
        Ok(match self {
            Tree::Leaf(v) => v,
            Tree::Seq(items) => serde_yaml::Value::Sequence(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| t.into_value(&format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Tree::Map(entries) => {
                let mut map = serde_yaml::Mapping::new();
                for (k, t) in entries {
                    let v = t.into_value(&format!("{path}.{k}"))?;
                    match map.get(k.as_str()) {
                        Some(old) if *old != v => {
                            return Err(format!("{path}: key {k:?} given twice, as {old:?} and {v:?}"))
                        }
                        Some(_) => {}
                        None => {
                            map.insert(serde_yaml::Value::String(k), v);
                        }
                    }
                }
                serde_yaml::Value::Mapping(map)
            }
        })
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Tree, E> {
                Ok(Tree::Leaf(b.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Tree, E> {
                Ok(Tree::Leaf(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Tree, E> {
                Ok(Tree::Leaf(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Tree, E> {
                Ok(Tree::Leaf(n.into()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Tree, E> {
                Ok(Tree::Leaf(s.into()))
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf(serde_yaml::Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(t) = a.next_element()? {
                    items.push(t);
                }
                Ok(Tree::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Tree, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, t)) = a.next_entry::<String, Tree>()? {
                    entries.push((k, t));
                }
                Ok(Tree::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Kafka's version range syntax: `N`, `N-M`, `N+`, `none`. Parsed here rather
/// than with `VersionRange::parse` so that the check does not rest on the
/// code it checks.
fn kafka_range(s: &str) -> VersionRange {
    let num = |t: &str| t.trim().parse::<i16>().unwrap_or_else(|_| panic!("bad version range {s:?} in a Kafka spec"));
    let s = s.trim();
    if s == "none" {
        VersionRange { min: 1, max: 0 }
    } else if let Some(min) = s.strip_suffix('+') {
        VersionRange { min: num(min), max: i16::MAX }
    } else if let Some((a, b)) = s.split_once('-') {
        VersionRange { min: num(a), max: num(b) }
    } else {
        VersionRange { min: num(s), max: num(s) }
    }
}

fn same_range(a: VersionRange, b: VersionRange) -> bool {
    (a.is_empty() && b.is_empty()) || a == b
}

fn show_range(r: VersionRange) -> String {
    if r.is_empty() {
        "none".into()
    } else if r.max == i16::MAX {
        format!("{}+", r.min)
    } else if r.min == r.max {
        format!("{}", r.min)
    } else {
        format!("{}-{}", r.min, r.max)
    }
}

/// Kafka's field names in snake_case, the one rule used for every field: an
/// underscore goes before an upper-case letter that follows a lower-case
/// letter or a digit, and before the last capital of a run of capitals that
/// is followed by a lower-case letter (ISRNodes -> isr_nodes).
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase() || prev.is_ascii_digit() || (prev.is_ascii_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

// ---------------------------------------------------------------------------
// The comparison

/// Mismatches of one message, each with the versions it shows up in.
#[derive(Default)]
struct Report {
    items: Vec<(String, Vec<i16>)>,
}

impl Report {
    fn add(&mut self, version: Option<i16>, what: String) {
        let i = match self.items.iter().position(|(w, _)| *w == what) {
            Some(i) => i,
            None => {
                self.items.push((what, Vec::new()));
                self.items.len() - 1
            }
        };
        if let Some(v) = version {
            self.items[i].1.push(v);
        }
    }

    fn render(self, message: &str) -> Vec<String> {
        self.items
            .into_iter()
            .map(|(what, versions)| {
                if versions.is_empty() {
                    format!("{message}: {what}")
                } else {
                    format!("{message} {}: {what}", show_versions(&versions))
                }
            })
            .collect()
    }
}

/// `[3,4,5,7]` -> `v3-5,7`.
fn show_versions(vs: &[i16]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < vs.len() {
        let mut j = i;
        while j + 1 < vs.len() && vs[j + 1] == vs[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { vs[i].to_string() } else { format!("{}-{}", vs[i], vs[j]) });
        i = j + 1;
    }
    format!("v{}", parts.join(","))
}

fn declared_type(ty: &FieldType) -> (String, Option<&StructSchema>) {
    match ty {
        FieldType::Array(inner) => {
            let (t, s) = declared_type(inner);
            (format!("[]{t}"), s)
        }
        FieldType::Struct(s) => ("struct".into(), Some(s)),
        FieldType::Bool => ("bool".into(), None),
        FieldType::Int8 => ("int8".into(), None),
        FieldType::Int16 => ("int16".into(), None),
        FieldType::Uint16 => ("uint16".into(), None),
        FieldType::Int32 => ("int32".into(), None),
        FieldType::Uint32 => ("uint32".into(), None),
        FieldType::Int64 => ("int64".into(), None),
        FieldType::Float64 => ("float64".into(), None),
        FieldType::String => ("string".into(), None),
        FieldType::Bytes => ("bytes".into(), None),
        FieldType::Records => ("records".into(), None),
        FieldType::Uuid => ("uuid".into(), None),
    }
}

/// A Kafka type in messages.def terms: named struct types become `struct`,
/// their members taken from the field itself or from `commonStructs`.
fn kafka_type<'a>(
    f: &'a SpecField,
    common: &HashMap<&str, &'a [SpecField]>,
) -> Result<(String, Option<&'a [SpecField]>), String> {
    let (array, base) = match f.ty.strip_prefix("[]") {
        Some(b) => ("[]", b),
        None => ("", f.ty.as_str()),
    };
    if PRIMITIVES.contains(&base) {
        if f.fields.is_some() {
            return Err(format!("Kafka type {} has member fields", f.ty));
        }
        return Ok((format!("{array}{base}"), None));
    }
    match (&f.fields, common.get(base)) {
        (Some(fields), _) => Ok((format!("{array}struct"), Some(fields.as_slice()))),
        (None, Some(fields)) => Ok((format!("{array}struct"), Some(*fields))),
        (None, None) => Err(format!("Kafka type {} is neither a primitive nor a known struct", f.ty)),
    }
}

fn compare_struct(
    version: i16,
    path: &str,
    declared: &StructSchema,
    kafka: &[SpecField],
    common: &HashMap<&str, &[SpecField]>,
    report: &mut Report,
) {
    let decl: Vec<&FieldSchema> = declared.fields.iter().filter(|f| f.versions.contains(version)).collect();
    let spec: Vec<&SpecField> = kafka.iter().filter(|f| kafka_range(&f.versions).contains(version)).collect();
    let decl_names: Vec<String> = decl.iter().map(|f| f.name.clone()).collect();
    let spec_names: Vec<String> = spec.iter().map(|f| snake_case(&f.name)).collect();
    let at = if path.is_empty() { "top level".to_string() } else { path.to_string() };
    if decl_names != spec_names {
        let missing: Vec<&String> = spec_names.iter().filter(|n| !decl_names.contains(n)).collect();
        let extra: Vec<&String> = decl_names.iter().filter(|n| !spec_names.contains(n)).collect();
        report.add(
            Some(version),
            format!(
                "{at}: fields differ (missing {missing:?}, not in Kafka {extra:?}); \
                 declared {decl_names:?}, Kafka has {spec_names:?}"
            ),
        );
        return;
    }
    for (d, k) in decl.iter().zip(&spec) {
        let here = if path.is_empty() { d.name.clone() } else { format!("{path}.{}", d.name) };
        for key in k.other.keys() {
            if !IGNORED_FIELD_ATTRIBUTES.contains(&key.as_str()) {
                report.add(Some(version), format!("{here}: Kafka attribute {key:?} is not understood by this check"));
            }
        }
        if let Some(fv) = &k.flexible_versions {
            report.add(
                Some(version),
                format!("{here}: Kafka gives a field-level flexibleVersions={fv}, which messages.def cannot express"),
            );
        }
        let (dt, dstruct) = declared_type(&d.ty);
        let (kt, kstruct) = match kafka_type(k, common) {
            Ok(t) => t,
            Err(e) => {
                report.add(Some(version), format!("{here}: {e}"));
                continue;
            }
        };
        if dt != kt {
            report.add(Some(version), format!("{here}: declared type {dt}, Kafka has {kt} ({})", k.ty));
        }
        let d_null = d.nullable.contains(version);
        let k_null = k.nullable_versions.as_deref().is_some_and(|r| kafka_range(r).contains(version));
        if d_null != k_null {
            report.add(Some(version), format!("{here}: declared nullable={d_null}, Kafka has nullable={k_null}"));
        }
        let d_tag = d.tagged.filter(|(_, r)| r.contains(version)).map(|(t, _)| t);
        let k_tag = match (k.tag, &k.tagged_versions) {
            (Some(t), Some(r)) if kafka_range(r).contains(version) => Some(t),
            (Some(_), None) | (None, Some(_)) => {
                report.add(Some(version), format!("{here}: Kafka gives only one of tag and taggedVersions"));
                None
            }
            _ => None,
        };
        if d_tag != k_tag {
            report.add(Some(version), format!("{here}: declared tag {d_tag:?}, Kafka has tag {k_tag:?}"));
        }
        if let (Some(ds), Some(ks)) = (dstruct, kstruct) {
            compare_struct(version, &here, ds, ks, common, report);
        }
    }
}

/// Every mismatch between one declared message and Kafka's spec for it.
fn check_message(m: &MessageSchema, spec: &Spec, expected_min: Option<i16>) -> Vec<String> {
    let mut report = Report::default();
    let kind = match m.kind {
        MessageKind::Request => "request",
        MessageKind::Response => "response",
    };
    if spec.name != m.name {
        report.add(None, format!("Kafka's spec is named {}", spec.name));
    }
    if spec.kind != kind {
        report.add(None, format!("declared a {kind}, Kafka's spec is a {}", spec.kind));
    }
    if spec.api_key != Some(m.api_key) {
        report.add(None, format!("declared key={}, Kafka has apiKey {:?}", m.api_key, spec.api_key));
    }
    let valid = kafka_range(&spec.valid_versions);
    if m.versions.is_empty() {
        report.add(None, format!("declared an empty version range {}", show_range(m.versions)));
    }
    if m.versions.max != valid.max {
        report.add(
            None,
            format!(
                "declared max version {}, Kafka's newest is {} (validVersions {})",
                m.versions.max, valid.max, spec.valid_versions
            ),
        );
    }
    if m.versions.min < valid.min {
        report.add(None, format!("declared min version {}, Kafka's oldest is {}", m.versions.min, valid.min));
    }
    if let Some(min) = expected_min {
        if m.versions.min != min {
            report.add(None, format!("declared min version {}, the proxy decodes from {min}", m.versions.min));
        }
    }
    let flexible = kafka_range(&spec.flexible_versions);
    if !same_range(m.flexible, flexible) {
        report.add(
            None,
            format!(
                "declared flexible={}, Kafka has flexibleVersions {}",
                show_range(m.flexible),
                spec.flexible_versions
            ),
        );
    }
    let common: HashMap<&str, &[SpecField]> =
        spec.common_structs.iter().map(|s| (s.name.as_str(), s.fields.as_slice())).collect();
    // Versions are compared up to Kafka's newest, even if the declared range
    // claims more: a too-high max is reported above.
    for v in m.versions.min.max(0)..=m.versions.max.min(valid.max) {
        compare_struct(v, "", &m.body, &spec.fields, &common, &mut report);
        check_tagged_only_in_flexible(v, "", &m.body, m.flexible, &mut report);
    }
    report.render(&m.name)
}

/// A tagged field can only be sent where the message has a tagged-field
/// section, i.e. in its flexible versions.
fn check_tagged_only_in_flexible(v: i16, path: &str, s: &StructSchema, flexible: VersionRange, report: &mut Report) {
    for f in s.fields.iter().filter(|f| f.versions.contains(v)) {
        let here = if path.is_empty() { f.name.clone() } else { format!("{path}.{}", f.name) };
        if f.is_tagged_in(v) && !flexible.contains(v) {
            report.add(Some(v), format!("{here}: tagged in a version that is not flexible"));
        }
        if let (_, Some(inner)) = declared_type(&f.ty) {
            check_tagged_only_in_flexible(v, &here, inner, flexible, report);
        }
    }
}

fn expected_min(m: &MessageSchema) -> Option<i16> {
    APIS.iter().find(|(_, key, _)| *key == m.api_key).map(|&(_, _, min)| min)
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn every_declaration_matches_kafkas_spec() {
    let mut messages: Vec<&MessageSchema> = registry().iter().collect();
    messages.sort_by_key(|m| (m.api_key, m.kind == MessageKind::Response));
    let mut problems = Vec::new();
    for m in &messages {
        match load_spec(&m.name) {
            Ok(spec) => problems.extend(check_message(m, &spec, expected_min(m))),
            Err(e) => problems.push(format!("{}: cannot read Kafka's spec: {e}", m.name)),
        }
    }
    assert!(
        problems.is_empty(),
        "messages.def disagrees with Kafka's specs in {} place(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn every_api_the_proxy_decodes_is_declared() {
    let reg = registry();
    let mut problems = Vec::new();
    for &(api, key, min) in APIS {
        let mut ranges = Vec::new();
        for (kind, suffix) in [(MessageKind::Request, "Request"), (MessageKind::Response, "Response")] {
            match reg.get(key, kind) {
                None => problems.push(format!("{api}{suffix} (key {key}) is not declared")),
                Some(m) => {
                    if m.name != format!("{api}{suffix}") {
                        problems.push(format!("key {key} {suffix} is declared as {}, expected {api}{suffix}", m.name));
                    }
                    if m.versions.min != min {
                        problems.push(format!("{}: decodes from version {}, expected {min}", m.name, m.versions.min));
                    }
                    ranges.push(m.versions);
                }
            }
        }
        if let [req, resp] = ranges[..] {
            if req != resp {
                problems.push(format!(
                    "{api}: request versions {} and response versions {} differ",
                    show_range(req),
                    show_range(resp)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn snake_case_rule() {
    for (kafka, ours) in [
        ("ThrottleTimeMs", "throttle_time_ms"),
        ("TopicId", "topic_id"),
        ("ISRNodes", "isr_nodes"),
        ("IsrNodes", "isr_nodes"),
        ("V3AndBelowTopics", "v3_and_below_topics"),
        ("ResultsByTopicV3AndBelow", "results_by_topic_v3_and_below"),
        ("V0Host", "v0_host"),
        ("LastKnownElr", "last_known_elr"),
        ("Key", "key"),
    ] {
        assert_eq!(snake_case(kafka), ours, "{kafka}");
    }
}

/// The comparison itself notices a wrong range, a missing field, a wrong
/// nullability, a wrong tag and a wrong type.
#[test]
fn comparison_catches_wrong_declarations() {
    let spec = load_spec("HeartbeatRequest").unwrap();
    let reg = parse_definitions(
        "message HeartbeatRequest key=12 versions=0-3 flexible=3+\n\
         \x20 group_id string nullable=0+\n\
         \x20 generation_id int64\n\
         \x20 group_instance_id string versions=3+ nullable=3+\n",
    )
    .unwrap();
    let problems = check_message(reg.get(12, MessageKind::Request).unwrap(), &spec, Some(0)).join("\n");
    for expected in [
        "declared max version 3, Kafka's newest is 4",
        "declared flexible=3+, Kafka has flexibleVersions 4+",
        "missing [\"member_id\"]",
    ] {
        assert!(problems.contains(expected), "expected {expected:?} in:\n{problems}");
    }

    let reg = parse_definitions(
        "message HeartbeatRequest key=12 versions=0-4 flexible=4+\n\
         \x20 group_id string nullable=0+\n\
         \x20 generation_id int64\n\
         \x20 member_id string tag=0 tagged=4+\n\
         \x20 group_instance_id string versions=3+ nullable=3+\n",
    )
    .unwrap();
    let problems = check_message(reg.get(12, MessageKind::Request).unwrap(), &spec, Some(0)).join("\n");
    for expected in [
        "HeartbeatRequest v0-4: group_id: declared nullable=true, Kafka has nullable=false",
        "HeartbeatRequest v0-4: generation_id: declared type int64, Kafka has int32",
        "HeartbeatRequest v4: member_id: declared tag Some(0), Kafka has tag None",
    ] {
        assert!(problems.contains(expected), "expected {expected:?} in:\n{problems}");
    }
}
