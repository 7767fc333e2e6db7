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
//!
//! Because derived groups have no members, Kafka would let anyone commit to
//! or delete from them, and would expire their offsets
//! `offsets.retention.minutes` after the last commit. The proxy makes them
//! answer what the group itself would ([`MainGroup`]) and re-commits their
//! offsets while the group's members commit ([`KeepAlive`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::kafka::api::{error, ErrorCode};

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
        ErrorCode::from_code(code),
        ErrorCode::ILLEGAL_GENERATION
            | ErrorCode::UNKNOWN_MEMBER_ID
            | ErrorCode::FENCED_INSTANCE_ID
            | ErrorCode::NOT_COORDINATOR
            | ErrorCode::COORDINATOR_NOT_AVAILABLE
            | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
            | ErrorCode::GROUP_AUTHORIZATION_FAILED
            | ErrorCode::INVALID_REQUEST
            | ErrorCode::STALE_MEMBER_EPOCH
    )
}

/// Where `proxy/` expects them (as `i16`, like `MainGroup::error_code`).
pub use crate::kafka::api::error::{GROUP_SUBSCRIBED_TO_TOPIC, NON_EMPTY_GROUP};

/// A group as DescribeGroups shows it: what admin actions on its derived
/// groups (which have no members of their own) are judged by.
#[derive(Debug, Clone, Default)]
pub struct MainGroup {
    pub error_code: i16,
    pub state: String,
    pub protocol_type: String,
    /// Each member's `member_metadata` (for "consumer" groups, its
    /// ConsumerProtocolSubscription).
    pub member_metadata: Vec<Vec<u8>>,
}

/// What an OffsetDelete may do to a group's derived offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteVerdict {
    /// Nothing is deleted; every partition gets this (group-level) error.
    Refuse(i16),
    /// Partitions of these topics get GROUP_SUBSCRIBED_TO_TOPIC, the rest
    /// are deleted.
    Subscribed(BTreeSet<String>),
    /// Some member's subscription could not be read: Kafka does not know
    /// it either and counts every topic as subscribed.
    SubscribedToAll,
}

impl MainGroup {
    fn has_members(&self) -> bool {
        // A rebalance can show no members for a moment; Kafka's checks go by
        // the state, which is only Empty (or Dead) without members.
        !self.member_metadata.is_empty() || matches!(self.state.as_str(), "Stable" | "PreparingRebalance" | "CompletingRebalance")
    }

    /// The error Kafka gives a standalone commit (generation -1, no member
    /// id: an admin tool or a consumer assigning partitions itself) to this
    /// group, `None` when it is accepted. Kafka (`ClassicGroup.
    /// validateOffsetCommit`) accepts it only while the group has no
    /// members, else UNKNOWN_MEMBER_ID; a group that does not exist is
    /// created empty.
    pub fn standalone_commit_refusal(&self) -> Option<i16> {
        match ErrorCode::from_code(self.error_code) {
            ErrorCode::NONE if self.has_members() => Some(error::UNKNOWN_MEMBER_ID),
            ErrorCode::NONE | ErrorCode::GROUP_ID_NOT_FOUND => None,
            code => Some(code.code()),
        }
    }

    /// What Kafka's OffsetDelete (`ClassicGroup.validateOffsetDelete`, then
    /// `OffsetMetadataManager.deleteOffsets`) does to this group's
    /// offsets: an empty group loses any; a group with members that is not
    /// a consumer group is refused with NON_EMPTY_GROUP; a consumer group
    /// with members keeps the offsets of topics it is subscribed to
    /// (GROUP_SUBSCRIBED_TO_TOPIC). A group that does not exist is
    /// Kafka's GROUP_ID_NOT_FOUND for itself, but its derived groups may
    /// hold offsets (committed by a standalone consumer to k ≥ 1
    /// partitions only): they answer for themselves.
    pub fn offset_delete_verdict(&self) -> DeleteVerdict {
        let code = ErrorCode::from_code(self.error_code);
        match code {
            ErrorCode::NONE | ErrorCode::GROUP_ID_NOT_FOUND => {}
            refused => return DeleteVerdict::Refuse(refused.code()),
        }
        if code == ErrorCode::GROUP_ID_NOT_FOUND || !self.has_members() {
            return DeleteVerdict::Subscribed(BTreeSet::new());
        }
        if self.protocol_type != "consumer" {
            return DeleteVerdict::Refuse(NON_EMPTY_GROUP);
        }
        let mut topics = BTreeSet::new();
        for metadata in &self.member_metadata {
            match subscription_topics(metadata) {
                Some(ts) => topics.extend(ts),
                None => return DeleteVerdict::SubscribedToAll,
            }
        }
        DeleteVerdict::Subscribed(topics)
    }
}

impl DeleteVerdict {
    /// The error a derived partition of `topic` gets instead of being
    /// deleted, if any.
    pub fn refusal(&self, topic: &str) -> Option<i16> {
        match self {
            DeleteVerdict::Refuse(code) => Some(*code),
            DeleteVerdict::Subscribed(topics) => topics.contains(topic).then_some(GROUP_SUBSCRIBED_TO_TOPIC),
            DeleteVerdict::SubscribedToAll => Some(GROUP_SUBSCRIBED_TO_TOPIC),
        }
    }
}

/// The topics of a ConsumerProtocolSubscription (any version: they come
/// first, after the int16 version, as an int32-counted array of int16-sized
/// strings); `None` when the bytes are not one.
pub fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut at = 2usize;
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let bytes = metadata.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(bytes)
    };
    if metadata.len() < 2 || i16::from_be_bytes([metadata[0], metadata[1]]) < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?);
    if count < 0 || count as usize > metadata.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = i16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?);
        if len < 0 {
            return None;
        }
        topics.push(String::from_utf8(take(&mut at, len as usize)?.to_vec()).ok()?);
    }
    Some(topics)
}

/// When each group's derived offsets were last re-committed by this proxy.
/// Kafka expires a derived group's offsets `offsets.retention.minutes`
/// (7 days by default) after their last commit, since the group has no
/// members, while the group's own offsets live as long as its members do.
/// So when a member of the group commits, the proxy re-commits the derived
/// offsets as they are, at most once per `interval` per group.
///
/// Kafka's commits are last-writer-wins: a re-commit of an offset read just
/// before a member commits the same partition would move it back. Offsets
/// committed through this proxy since the last refresh are fresh anyway and
/// left out, so only partitions idle for an interval are re-committed.
#[derive(Debug)]
pub struct KeepAlive {
    interval: Duration,
    groups: Mutex<HashMap<String, Refresh>>,
}

/// A derived offset: (k, topic, physical partition).
pub type DerivedOffset = (i32, String, i32);

#[derive(Debug, Default)]
struct Refresh {
    last: Option<Instant>,
    /// Committed through this proxy since `last`.
    fresh: BTreeSet<DerivedOffset>,
}

/// Past this many groups, those refreshed longer than an interval ago are
/// forgotten (they are simply due again).
const KEEPALIVE_PRUNE_AT: usize = 10_000;

impl KeepAlive {
    pub fn new(interval: Duration) -> KeepAlive {
        KeepAlive { interval, groups: Mutex::new(HashMap::new()) }
    }

    fn recent(&self, last: Option<Instant>, now: Instant) -> bool {
        last.is_some_and(|t| now.saturating_duration_since(t) < self.interval)
    }

    /// Whether `group`'s derived offsets are due a refresh at `now`.
    pub fn is_due(&self, group: &str, now: Instant) -> bool {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        !self.recent(groups.get(group).and_then(|r| r.last), now)
    }

    /// Records derived offsets a member of `group` just committed.
    pub fn committed(&self, group: &str, offsets: impl IntoIterator<Item = DerivedOffset>, now: Instant) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        self.prune(&mut groups, now);
        groups.entry(group.to_string()).or_default().fresh.extend(offsets);
    }

    /// Takes the refresh of `group` at `now` if it is due (one caller per
    /// interval, so concurrent commits refresh once): the offsets to leave
    /// out, committed since the last refresh.
    pub fn claim(&self, group: &str, now: Instant) -> Option<BTreeSet<DerivedOffset>> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if self.recent(groups.get(group).and_then(|r| r.last), now) {
            return None;
        }
        self.prune(&mut groups, now);
        let refresh = groups.entry(group.to_string()).or_default();
        refresh.last = Some(now);
        Some(std::mem::take(&mut refresh.fresh))
    }

    fn prune(&self, groups: &mut HashMap<String, Refresh>, now: Instant) {
        if groups.len() >= KEEPALIVE_PRUNE_AT {
            groups.retain(|_, r| self.recent(r.last, now));
        }
    }
}

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

    /// A ConsumerProtocolSubscription v1 as the Java client writes it.
    fn subscription(topics: &[&str]) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for t in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
        }
        b.extend((-1i32).to_be_bytes()); // user data: null
        b.extend(0i32.to_be_bytes()); // owned partitions: none
        b
    }

    fn group(state: &str, protocol_type: &str, members: Vec<Vec<u8>>) -> MainGroup {
        MainGroup { error_code: error::NONE, state: state.into(), protocol_type: protocol_type.into(), member_metadata: members }
    }

    #[test]
    fn subscription_topics_read_and_garbage_refused() {
        assert_eq!(subscription_topics(&subscription(&["a", "bb"])), Some(vec!["a".to_string(), "bb".to_string()]));
        assert_eq!(subscription_topics(&subscription(&[])), Some(vec![]));
        assert_eq!(subscription_topics(&[]), None);
        assert_eq!(subscription_topics(&[0, 1, 0, 0, 0, 2, 0, 1, b'a']), None, "a topic short");
        assert_eq!(subscription_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None, "absurd count");
        assert_eq!(subscription_topics(&[0xff, 0xff, 0, 0, 0, 0]), None, "negative version");
    }

    #[test]
    fn standalone_commit_accepted_only_without_members() {
        assert_eq!(group("Empty", "consumer", vec![]).standalone_commit_refusal(), None);
        assert_eq!(group("Dead", "", vec![]).standalone_commit_refusal(), None);
        let missing = MainGroup { error_code: error::GROUP_ID_NOT_FOUND, ..Default::default() };
        assert_eq!(missing.standalone_commit_refusal(), None);
        let live = group("Stable", "consumer", vec![subscription(&["t"])]);
        assert_eq!(live.standalone_commit_refusal(), Some(error::UNKNOWN_MEMBER_ID));
        assert_eq!(group("PreparingRebalance", "consumer", vec![]).standalone_commit_refusal(), Some(error::UNKNOWN_MEMBER_ID));
        let moved = MainGroup { error_code: error::NOT_COORDINATOR, ..Default::default() };
        assert_eq!(moved.standalone_commit_refusal(), Some(error::NOT_COORDINATOR));
    }

    #[test]
    fn offset_delete_keeps_subscribed_topics_of_live_groups() {
        assert_eq!(group("Empty", "consumer", vec![]).offset_delete_verdict(), DeleteVerdict::Subscribed(BTreeSet::new()));
        let live = group("Stable", "consumer", vec![subscription(&["a"]), subscription(&["b"])]);
        let verdict = live.offset_delete_verdict();
        assert_eq!(verdict.refusal("a"), Some(GROUP_SUBSCRIBED_TO_TOPIC));
        assert_eq!(verdict.refusal("b"), Some(GROUP_SUBSCRIBED_TO_TOPIC));
        assert_eq!(verdict.refusal("c"), None);
        let unreadable = group("Stable", "consumer", vec![vec![1, 2, 3]]);
        assert_eq!(unreadable.offset_delete_verdict().refusal("c"), Some(GROUP_SUBSCRIBED_TO_TOPIC));
        let connect = group("Stable", "connect", vec![vec![]]);
        assert_eq!(connect.offset_delete_verdict(), DeleteVerdict::Refuse(NON_EMPTY_GROUP));
        let missing = MainGroup { error_code: error::GROUP_ID_NOT_FOUND, ..Default::default() };
        assert_eq!(missing.offset_delete_verdict().refusal("a"), None);
        let loading = MainGroup { error_code: error::COORDINATOR_LOAD_IN_PROGRESS, ..Default::default() };
        assert_eq!(loading.offset_delete_verdict().refusal("a"), Some(error::COORDINATOR_LOAD_IN_PROGRESS));
    }

    #[test]
    fn keepalive_once_per_interval_per_group() {
        let keepalive = KeepAlive::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert!(keepalive.is_due("g", t0));
        assert_eq!(keepalive.claim("g", t0), Some(BTreeSet::new()));
        assert_eq!(keepalive.claim("g", t0), None, "a second commit at once refreshes again");
        assert!(!keepalive.is_due("g", at(9)));
        assert_eq!(keepalive.claim("g", at(9)), None);
        assert!(keepalive.claim("other", at(9)).is_some(), "groups are independent");
        assert!(keepalive.is_due("g", at(10)));
        assert!(keepalive.claim("g", at(10)).is_some());
        assert_eq!(keepalive.claim("g", at(19)), None);
    }

    #[test]
    fn keepalive_leaves_out_offsets_committed_since_the_last_refresh() {
        let keepalive = KeepAlive::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        keepalive.committed("g", [(1, "t".to_string(), 0)], t0);
        assert!(keepalive.is_due("g", t0), "a commit is not a refresh");
        assert_eq!(keepalive.claim("g", t0), Some(BTreeSet::from([(1, "t".to_string(), 0)])));
        keepalive.committed("g", [(2, "t".to_string(), 3)], at(5));
        keepalive.committed("g", [(2, "t".to_string(), 3), (1, "u".to_string(), 1)], at(6));
        assert_eq!(
            keepalive.claim("g", at(10)),
            Some(BTreeSet::from([(1, "u".to_string(), 1), (2, "t".to_string(), 3)])),
            "what was committed in the last interval"
        );
        assert_eq!(keepalive.claim("g", at(20)), Some(BTreeSet::new()), "nothing committed since");
    }
}
