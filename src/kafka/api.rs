//! API keys the proxy knows by name, and the Kafka error codes it produces
//! or inspects (`ErrorCode`, and the same codes as `i16` in `error`).

macro_rules! api_keys {
    ($($name:ident = $key:expr),* $(,)?) => {
        /// Kafka API keys the proxy has a policy for.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(i16)]
        pub enum ApiKey { $($name = $key),* }

        impl ApiKey {
            pub fn from_i16(key: i16) -> Option<ApiKey> {
                match key { $($key => Some(ApiKey::$name),)* _ => None }
            }
            pub fn name(self) -> &'static str {
                match self { $(ApiKey::$name => stringify!($name)),* }
            }
            pub const ALL: &'static [ApiKey] = &[$(ApiKey::$name),*];
        }
    };
}

api_keys! {
    Produce = 0,
    Fetch = 1,
    ListOffsets = 2,
    Metadata = 3,
    OffsetCommit = 8,
    OffsetFetch = 9,
    FindCoordinator = 10,
    JoinGroup = 11,
    Heartbeat = 12,
    LeaveGroup = 13,
    SyncGroup = 14,
    DescribeGroups = 15,
    ListGroups = 16,
    SaslHandshake = 17,
    ApiVersions = 18,
    CreateTopics = 19,
    DeleteTopics = 20,
    DeleteRecords = 21,
    InitProducerId = 22,
    OffsetForLeaderEpoch = 23,
    AddPartitionsToTxn = 24,
    AddOffsetsToTxn = 25,
    EndTxn = 26,
    TxnOffsetCommit = 28,
    DescribeConfigs = 32,
    SaslAuthenticate = 36,
    CreatePartitions = 37,
    DeleteGroups = 42,
    IncrementalAlterConfigs = 44,
    OffsetDelete = 47,
    DescribeCluster = 60,
    DescribeProducers = 61,
    DescribeTopicPartitions = 75,
}

/// Display name of any API key, known or not.
pub fn api_name(key: i16) -> String {
    ApiKey::from_i16(key).map_or_else(|| format!("ApiKey{key}"), |k| k.name().to_string())
}

macro_rules! error_codes {
    ($($name:ident = $code:literal),* $(,)?) => {
        /// A Kafka error code (protocol guide, "Error Codes"). A newtype
        /// rather than an enum: brokers send codes the proxy has no name for,
        /// and those pass through unchanged.
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct ErrorCode(i16);

        impl ErrorCode {
            $(pub const $name: ErrorCode = ErrorCode($code);)*

            pub const fn from_code(code: i16) -> ErrorCode {
                ErrorCode(code)
            }

            pub const fn code(self) -> i16 {
                self.0
            }

            /// Kafka's name for the code, for logs; `None` for codes the
            /// proxy has no name for.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($code => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            pub fn is_error(self) -> bool {
                self != ErrorCode::NONE
            }
        }

        /// The same codes as `i16` constants, for code that reads and
        /// writes the raw field value.
        pub mod error {
            $(pub const $name: i16 = $code;)*
        }
    };
}

error_codes! {
    NONE = 0,
    OFFSET_OUT_OF_RANGE = 1,
    CORRUPT_MESSAGE = 2,
    UNKNOWN_TOPIC_OR_PARTITION = 3,
    LEADER_NOT_AVAILABLE = 5,
    NOT_LEADER_OR_FOLLOWER = 6,
    REQUEST_TIMED_OUT = 7,
    COORDINATOR_LOAD_IN_PROGRESS = 14,
    COORDINATOR_NOT_AVAILABLE = 15,
    NOT_COORDINATOR = 16,
    MESSAGE_TOO_LARGE = 10,
    RECORD_LIST_TOO_LARGE = 18,
    INVALID_CONFIG = 40,
    INVALID_TOPIC_EXCEPTION = 17,
    INVALID_REQUIRED_ACKS = 21,
    ILLEGAL_GENERATION = 22,
    UNKNOWN_MEMBER_ID = 25,
    REBALANCE_IN_PROGRESS = 27,
    GROUP_AUTHORIZATION_FAILED = 30,
    UNSUPPORTED_SASL_MECHANISM = 33,
    ILLEGAL_SASL_STATE = 34,
    UNSUPPORTED_VERSION = 35,
    TOPIC_ALREADY_EXISTS = 36,
    INVALID_PARTITIONS = 37,
    NOT_CONTROLLER = 41,
    INVALID_REQUEST = 42,
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43,
    POLICY_VIOLATION = 44,
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
    INVALID_TXN_STATE = 48,
    OPERATION_NOT_ATTEMPTED = 55,
    KAFKA_STORAGE_ERROR = 56,
    SASL_AUTHENTICATION_FAILED = 58,
    FENCED_LEADER_EPOCH = 74,
    UNKNOWN_SERVER_ERROR = -1,
    NON_EMPTY_GROUP = 68,
    GROUP_ID_NOT_FOUND = 69,
    FENCED_INSTANCE_ID = 82,
    GROUP_SUBSCRIBED_TO_TOPIC = 86,
    STALE_MEMBER_EPOCH = 113,
}

impl From<i16> for ErrorCode {
    fn from(code: i16) -> ErrorCode {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for i16 {
    fn from(code: ErrorCode) -> i16 {
        code.0
    }
}

impl std::fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "ErrorCode({})", self.0),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_have_names() {
        assert_eq!(ErrorCode::from_code(3), ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        assert_eq!(ErrorCode::CORRUPT_MESSAGE.code(), error::CORRUPT_MESSAGE);
        assert_eq!(ErrorCode::NOT_COORDINATOR.name(), Some("NOT_COORDINATOR"));
        assert_eq!(ErrorCode::from_code(-1).to_string(), "UNKNOWN_SERVER_ERROR(-1)");
        assert_eq!(ErrorCode::from_code(9999).name(), None);
        assert!(!ErrorCode::NONE.is_error());
    }
}
