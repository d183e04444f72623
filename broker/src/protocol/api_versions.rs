//! ApiVersions: the APIs and version ranges this broker serves.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::Encodable;

use super::{errors, versions};

pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

fn api_keys() -> Vec<ApiVersion> {
    versions::served()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

/// A client asked for a version we do not serve: answer in v0 (which every client can
/// read) with UNSUPPORTED_VERSION and our ranges, so it can retry with one we do.
pub fn unsupported_version(correlation_id: i32) -> super::Frame {
    let response = ApiVersionsResponse::default()
        .with_error_code(errors::UNSUPPORTED_VERSION)
        .with_api_keys(api_keys());
    super::frame::plain(correlation_id, 0, |buf| response.encode(buf, 0))
        .expect("v0 ApiVersions encodes")
}
