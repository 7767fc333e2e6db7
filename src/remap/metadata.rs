//! Metadata as clients must see it: a remapped topic lists V partitions,
//! virtual partition `v` carrying the leader, epoch, replicas, ISR and
//! offline replicas of its physical partition. A topic whose physical count
//! contradicts its rule (INVALID_PARTITIONS), or a compacted one a rule
//! would remap (INVALID_CONFIG), is reported with an error instead.

use crate::cluster::ClusterView;
use crate::kafka::api::error;
use crate::kafka::codec::{Struct, Value};

use super::mapping::{Decision, Mapper, PhysicalPartition};

/// Rewrite the topics of a Metadata response body; returns whether
/// anything changed. `view` must already include this response.
pub fn virtualize(body: &mut Struct<'_>, mapper: &Mapper, view: &ClusterView) -> bool {
    let mut changed = false;
    for topic in body.structs_mut("topics") {
        let Some(name) = topic.str("name").map(str::to_string) else { continue };
        if topic.i16("error_code") != Some(error::NONE) {
            continue;
        }
        match mapper.decide(&name, view) {
            Decision::PassThrough => {}
            Decision::Remap(m) => {
                let physical: Vec<Struct<'_>> = topic.structs("partitions").cloned().collect();
                let by_index = |p: PhysicalPartition| physical.iter().find(|s| s.i32("partition_index") == Some(p.0));
                let mut partitions = Vec::with_capacity(m.virtual_count as usize);
                for v in 0..m.virtual_count {
                    let (p, _) = m.locate(super::mapping::VirtualPartition(v)).expect("in range");
                    if let Some(src) = by_index(p) {
                        let mut s = src.clone();
                        s.set("partition_index", Value::Int32(v));
                        partitions.push(Value::Struct(s));
                    }
                }
                topic.set("partitions", Value::Array(Some(partitions)));
                changed = true;
            }
            refused @ (Decision::Mismatch { .. } | Decision::Compacted { .. }) => {
                topic.set("error_code", Value::Int16(refused.refusal_code().unwrap_or(error::INVALID_PARTITIONS)));
                topic.set("partitions", Value::Array(Some(Vec::new())));
                changed = true;
            }
        }
    }
    changed
}
