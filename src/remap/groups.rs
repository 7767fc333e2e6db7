//! Committed offsets of virtual partitions.
//!
//! Kafka keeps one committed offset per (group, topic, partition) and
//! refuses partitions that do not exist. A virtual partition with sibling
//! index k = 0 is physical partition p itself, so it commits to (g, T, p)
//! unchanged. One with k ≥ 1 commits to the *derived group*
//! `g.kpr-vp-k<k>` at (T, p): a group with no members, which Kafka accepts
//! commits for (generation -1, empty member id), as it does from admin
//! tools. Derived groups are hidden from ListGroups and deleted with their
//! group.

use crate::kafka::api::error;

/// The fixed suffix of derived groups; `k` follows it.
pub const DERIVED_SUFFIX: &str = ".kpr-vp-k";

pub fn derived_group(group: &str, k: i32) -> String {
    debug_assert!(k >= 1);
    format!("{group}{DERIVED_SUFFIX}{k}")
}

/// `Some((group, k))` when `name` is a derived group.
pub fn parse_derived(name: &str) -> Option<(&str, i32)> {
    let at = name.rfind(DERIVED_SUFFIX)?;
    let k: i32 = name[at + DERIVED_SUFFIX.len()..].parse().ok()?;
    (k >= 1 && name[at + DERIVED_SUFFIX.len()..] == k.to_string()).then(|| (&name[..at], k))
}

/// Errors that mean the committing member is not (or not yet known to be)
/// a current member of the group: its derived commits must not be written.
pub fn refuses_member(code: i16) -> bool {
    matches!(
        code,
        error::ILLEGAL_GENERATION
            | error::UNKNOWN_MEMBER_ID
            | error::FENCED_INSTANCE_ID
            | error::NOT_COORDINATOR
            | error::COORDINATOR_NOT_AVAILABLE
            | COORDINATOR_LOAD_IN_PROGRESS
            | GROUP_AUTHORIZATION_FAILED
            | error::INVALID_REQUEST
            | STALE_MEMBER_EPOCH
    )
}

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const STALE_MEMBER_EPOCH: i16 = 113;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_round_trip() {
        assert_eq!(derived_group("orders", 3), "orders.kpr-vp-k3");
        assert_eq!(parse_derived("orders.kpr-vp-k3"), Some(("orders", 3)));
        assert_eq!(parse_derived("a.kpr-vp-k1.kpr-vp-k12"), Some(("a.kpr-vp-k1", 12)));
        assert_eq!(parse_derived("orders"), None);
        assert_eq!(parse_derived("orders.kpr-vp-k0"), None);
        assert_eq!(parse_derived("orders.kpr-vp-k03"), None);
        assert_eq!(parse_derived("orders.kpr-vp-kx"), None);
    }
}
