//! ApiVersions: the APIs and version ranges this broker serves.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsResponse, ResponseHeader};
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
pub fn unsupported_version(correlation_id: i32) -> Bytes {
    let response = ApiVersionsResponse::default()
        .with_error_code(errors::UNSUPPORTED_VERSION)
        .with_api_keys(api_keys());
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, 0)
        .expect("v0 header encodes");
    response.encode(&mut buf, 0).expect("v0 body encodes");
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    buf.freeze()
}
