//! The `cleanup.policy` of topics a rule would remap, read with
//! DescribeConfigs before the proxy first serves them (at start, after each
//! metadata refresh for topics new since, and before a request naming a
//! topic not asked about yet). A compacted topic is refused rather than
//! remapped: see `remap::mapping::Decision::Compacted`.

use std::time::{Duration, Instant};

use log::warn;
use parking_lot::Mutex;

use super::control::{ControlClient, UpstreamError};
use crate::kafka::api::{error, ApiKey};
use crate::kafka::codec::{self, Value};
use crate::cluster::ClusterView;
use crate::kafka::fields::describe_configs_request::{self as request, resources as resource};
use crate::kafka::fields::describe_configs_response::{self as response, results::{self as result, configs as config}};
use crate::kafka::fields::members;
use crate::remap::mapping::{CleanupPolicy, Mapper};

const TOPIC_RESOURCE: i8 = 2;
const CLEANUP_POLICY: &str = "cleanup.policy";
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
const TOPICS_PER_REQUEST: usize = 100;

/// What DescribeConfigs said about one topic: its error code and message,
/// and the `cleanup.policy` value when reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub topic: String,
    pub error_code: i16,
    pub error_message: String,
    pub cleanup_policy: Option<String>,
}

impl Described {
    pub fn policy(&self) -> CleanupPolicy {
        if self.error_code != error::NONE {
            let message = if self.error_message.is_empty() { String::new() } else { format!(": {}", self.error_message) };
            return CleanupPolicy::Unreadable(format!("DescribeConfigs answered error code {}{message}", self.error_code));
        }
        CleanupPolicy::from_value(self.cleanup_policy.as_deref())
    }
}

/// After a failed call, requests do not each pay for another attempt for
/// a while (a broker that drops the connection on DescribeConfigs would
/// otherwise cost every request a round trip).
static FAILED_AT: Mutex<Option<Instant>> = Mutex::new(None);

/// Those of `topics` whose cleanup policy must be read before they are
/// served (a rule would remap them and their policy is not known for their
/// current id), unless reading failed a moment ago. Does not wait; runs on
/// every request naming topics while a rule remaps, so it copies only the
/// names it returns.
pub fn unknown_policies<'t>(view: &ClusterView, mapper: &Mapper, topics: impl IntoIterator<Item = &'t str>) -> Vec<String> {
    if FAILED_AT.lock().is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE) {
        return Vec::new();
    }
    topics.into_iter().filter(|t| view.topics.contains_key(*t) && mapper.needs_policy(t, view)).map(str::to_string).collect()
}

/// Read the cleanup policy of those of `topics` that need it
/// (`unknown_policies`) in one DescribeConfigs request, and record it in
/// `mapper`. No lock is held across the call. Returns the topics newly
/// found compacted. A failed call (cluster unreachable) leaves them
/// unknown, and remapped, to be asked again a second later at the
/// earliest.
pub fn learn(control: &mut ControlClient, mapper: &Mapper, topics: &[String]) -> Vec<String> {
    let wanted: Vec<(String, [u8; 16])> = {
        let view = control.cluster().read();
        unknown_policies(&view, mapper, topics.iter().map(String::as_str))
            .into_iter().filter_map(|t| Some((view.topics.get(&t)?.id, t))).map(|(id, name)| (name, id)).collect()
    };
    if wanted.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
    // Each topic's every config comes back (see `describe`): a few KB per
    // topic on Kafka, so a cluster's worth is asked for in slices.
    let described: Result<Vec<Described>, UpstreamError> =
        names.chunks(TOPICS_PER_REQUEST).try_fold(Vec::new(), |mut all, slice| {
            all.extend(describe(control, slice)?);
            Ok(all)
        });
    let answers = match described {
        Ok(a) => a,
        Err(UpstreamError::Unsupported { .. }) => names
            .iter()
            .map(|n| Described {
                topic: n.clone(),
                error_code: error::UNSUPPORTED_VERSION,
                error_message: "the cluster does not offer DescribeConfigs".into(),
                cleanup_policy: None,
            })
            .collect(),
        Err(e) => {
            warn!(
                "Cannot read the cleanup.policy of {names:?} yet ({e}); remapped meanwhile, asked again in {} s or at the \
                 next refresh",
                RETRY_AFTER_FAILURE.as_secs()
            );
            *FAILED_AT.lock() = Some(Instant::now());
            return Vec::new();
        }
    };
    let mut compacted = Vec::new();
    for (name, id) in wanted {
        let Some(answer) = answers.iter().find(|a| a.topic == name) else { continue };
        let policy = answer.policy();
        match &policy {
            CleanupPolicy::Compact => compacted.push(name.clone()),
            CleanupPolicy::Unreadable(why) => warn!(
                "Cannot read the cleanup.policy of topic {name} ({why}): remapping it as if not compacted. \
                 If it is compacted, its virtual partitions will erase each other's records; grant the \
                 proxy DescribeConfigs on the topic so that it can tell"
            ),
            CleanupPolicy::Delete => {}
        }
        mapper.set_policy(&name, id, policy);
    }
    compacted
}

/// One DescribeConfigs request for the configs of each topic.
pub fn describe(control: &mut ControlClient, topics: &[String]) -> Result<Vec<Described>, UpstreamError> {
    control.call_any(
        ApiKey::DescribeConfigs,
        |b, v| {
            let schema = members(b.schema, request::RESOURCES);
            let resources = topics
                .iter()
                .map(|t| {
                    let mut r = codec::with_defaults(schema, v);
                    r.write(resource::RESOURCE_TYPE, TOPIC_RESOURCE);
                    r.write(resource::RESOURCE_NAME, t.clone());
                    // All of the topic's configs (null keys), not just
                    // cleanup.policy: Kafka takes either, but Tansu 0.6
                    // cannot decode a list of keys and closes the
                    // connection (seen in every version, 0-4).
                    r.put(resource::CONFIGURATION_KEYS, Value::Array(None));
                    Value::Struct(r.into_owned())
                })
                .collect::<Vec<_>>();
            b.write(request::RESOURCES, resources);
        },
        |r| {
            Ok(r.iter(response::RESULTS)
                .map(|res| Described {
                    topic: res.read(result::RESOURCE_NAME).unwrap_or_default().to_string(),
                    error_code: res.read(result::ERROR_CODE).unwrap_or(error::NONE),
                    error_message: res.read(result::ERROR_MESSAGE).unwrap_or_default().to_string(),
                    cleanup_policy: res
                        .iter(result::CONFIGS)
                        .find(|c| c.read(config::NAME) == Some(CLEANUP_POLICY))
                        .and_then(|c| c.read(config::VALUE).map(str::to_string)),
                })
                .collect())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(code: i16, value: Option<&str>) -> Described {
        Described { topic: "t".into(), error_code: code, error_message: "denied".into(), cleanup_policy: value.map(Into::into) }
    }

    #[test]
    fn policy_from_answers() {
        assert_eq!(described(0, Some("compact")).policy(), CleanupPolicy::Compact);
        assert_eq!(described(0, Some("compact,delete")).policy(), CleanupPolicy::Compact);
        assert_eq!(described(0, Some("delete")).policy(), CleanupPolicy::Delete);
        // Tansu reports only configs given at creation: none is Kafka's default, delete.
        assert_eq!(described(0, None).policy(), CleanupPolicy::Delete);
        // TOPIC_AUTHORIZATION_FAILED
        assert_eq!(
            described(29, None).policy(),
            CleanupPolicy::Unreadable("DescribeConfigs answered error code 29: denied".into())
        );
    }
}
