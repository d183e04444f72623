//! The API versions this broker serves: the ranges below, intersected with what the
//! `kafka-protocol` codecs support. Only APIs with a handler are listed (advertising an
//! API means serving it).

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 1),
];

/// Every served API with its version range.
pub fn served() -> impl Iterator<Item = (ApiKey, VersionRange)> {
    SERVED.iter().filter_map(|&(key, min, max)| {
        let range = VersionRange { min, max }.intersect(&key.valid_versions());
        (!range.is_empty()).then_some((key, range))
    })
}

pub fn supported(key: ApiKey, version: i16) -> bool {
    served().any(|(k, r)| k == key && r.min <= version && version <= r.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_match_the_contract() {
        let get = |key| {
            served()
                .find(|(k, _)| *k == key)
                .map(|(_, r)| (r.min, r.max))
        };
        assert_eq!(get(ApiKey::Produce), Some((3, 12)));
        assert_eq!(get(ApiKey::Fetch), Some((4, 12)));
        assert_eq!(get(ApiKey::ApiVersions), Some((0, 4)));
        assert!(!supported(ApiKey::Produce, 2));
        assert!(!supported(ApiKey::SaslHandshake, 0));
        assert_eq!(served().count(), SERVED.len());
    }
}
