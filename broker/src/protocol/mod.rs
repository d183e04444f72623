//! The Kafka protocol surface: a thin dispatch from a request frame to one handler per API
//! (one file each), with `kafka-protocol`'s generated codecs deciding header and body
//! versions. Unknown APIs or versions and undecodable requests close the connection with a
//! logged reason, as Kafka does; ApiVersions answers unsupported versions with error 35.

pub mod errors;
pub mod frame;
mod versions;

mod api_versions;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable, StrBytes};

use crate::broker::Broker;
use crate::metrics;

pub use frame::Frame;
pub use versions::supported;

/// A response frame now, one to be sent once its future resolves, or none (acks=0).
pub enum Reply {
    Now(Option<Frame>),
    Later(Pin<Box<dyn Future<Output = Option<Frame>> + Send>>),
}

/// A decoded request frame.
pub enum Decoded {
    Request(Box<(Ctx, RequestKind)>),
    /// ApiVersions at a version we do not serve: answered in v0 with error 35.
    UnsupportedApiVersions(i32),
}

/// Decodes a request frame (without its size prefix). Errors mean the connection should
/// be closed: the frame is not a request this broker can answer.
pub fn decode(mut frame: Bytes, peer: SocketAddr) -> anyhow::Result<Decoded> {
    if frame.len() < 8 {
        bail!("request of {} bytes is shorter than a header", frame.len());
    }
    let started = Instant::now();
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        metrics::REQUEST_ERRORS
            .with_label_values(&["unknown_api"])
            .inc();
        bail!("unknown API key {raw_key}");
    };
    if !versions::supported(api_key, version) {
        metrics::REQUEST_ERRORS
            .with_label_values(&["unsupported_version"])
            .inc();
        if api_key == ApiKey::ApiVersions {
            return Ok(Decoded::UnsupportedApiVersions(correlation_id));
        }
        let served = match versions::served().find(|(k, _)| *k == api_key) {
            Some((_, r)) => format!("versions {} to {} are served", r.min, r.max),
            None => "this API is not served".to_string(),
        };
        bail!("{api_key:?} v{version} is not supported ({served}; the client should ask ApiVersions first)");
    }
    let header = decode_request_header_from_buffer(&mut frame)
        .with_context(|| format!("decoding {api_key:?} v{version} request header"))?;
    let request = RequestKind::decode(api_key, &mut frame, version)
        .with_context(|| format!("decoding {api_key:?} v{version} request body"))?;
    let ctx = Ctx {
        api_key,
        version,
        correlation_id,
        client_id: header.client_id.clone().unwrap_or_default(),
        peer,
        listener: Listener::Internal,
        started,
    };
    Ok(Decoded::Request(Box::new((ctx, request))))
}

/// Decodes one request frame and runs its handler.
pub async fn handle(
    broker: &Arc<Broker>,
    frame: Bytes,
    peer: SocketAddr,
    listener: Listener,
) -> anyhow::Result<Reply> {
    let (mut ctx, request) = match decode(frame, peer)? {
        Decoded::Request(decoded) => *decoded,
        Decoded::UnsupportedApiVersions(correlation_id) => {
            return Ok(Reply::Now(Some(api_versions::unsupported_version(
                correlation_id,
            ))))
        }
    };
    ctx.listener = listener;
    let version = ctx.version;
    metrics::REQUESTS
        .with_label_values(&[api_name(ctx.api_key)])
        .inc();
    let response = match request {
        RequestKind::Produce(r) => return produce::handle(broker, r, ctx),
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle()),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(broker, r, &ctx).await),
        RequestKind::Fetch(r) => {
            let response = fetch::handle(broker, r, version).await;
            // The records go out from the buffers they were read into.
            let records = fetch::record_buffers(&response);
            let frame = ctx.encode_sharing(&response, &records)?;
            return Ok(Reply::Now(Some(frame)));
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, r, version))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(broker, r, &ctx))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(join_group::handle(broker, r, &ctx).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(sync_group::handle(broker, r, version).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(broker, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(leave_group::handle(broker, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(broker, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(broker, r, version))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(broker, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(broker, r, version).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, r))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(broker, r, version).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(list_groups::handle(broker, r, version).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(broker, r))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(broker, r, ctx.listener))
        }
        other => bail!("no handler for {other:?}"),
    };
    Ok(Reply::Now(Some(ctx.encode(&response)?)))
}

/// What a handler may need to know about the request beyond its body.
pub struct Ctx {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: StrBytes,
    /// The client's address (JoinGroup records it for DescribeGroups).
    pub peer: SocketAddr,
    /// The listener the request came in on: it decides which broker addresses it is told.
    pub listener: Listener,
    pub started: Instant,
}

/// The Kafka listeners a broker may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The advertised address (inside the cluster's network).
    Internal,
    /// The external address (`--external-kafka-addr`): clients outside that network.
    External,
}

impl Ctx {
    /// Frames a response: size, header (version chosen by the codec), body.
    pub fn encode(&self, response: &ResponseKind) -> anyhow::Result<Frame> {
        let framed = frame::plain(self.correlation_id, self.header_version(), |buf| {
            response.encode(buf, self.version)
        });
        self.framed(framed)
    }

    /// Frames a response whose byte fields include some of `shared`: those are sent from
    /// where they are rather than copied into the frame.
    pub fn encode_sharing(
        &self,
        response: &impl Encodable,
        shared: &[Bytes],
    ) -> anyhow::Result<Frame> {
        let framed = frame::sharing(self.correlation_id, self.header_version(), shared, |buf| {
            response.encode(buf, self.version)
        });
        self.framed(framed)
    }

    fn header_version(&self) -> i16 {
        self.api_key.response_header_version(self.version)
    }

    fn framed(&self, framed: anyhow::Result<Frame>) -> anyhow::Result<Frame> {
        let frame = framed
            .with_context(|| format!("encoding {:?} v{} response", self.api_key, self.version))?;
        metrics::REQUEST_SECONDS
            .with_label_values(&[api_name(self.api_key)])
            .observe(self.started.elapsed().as_secs_f64());
        Ok(frame)
    }
}

pub fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        _ => "other",
    }
}

/// Shorthand for building `StrBytes` from owned strings.
pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, RequestHeader, TopicName};

    use super::*;
    use bytes::BytesMut;

    fn test_peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    fn metadata_frame(version: i16, topics: &[&str]) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(str_bytes("test")));
        let topics = topics
            .iter()
            .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(*t)))))
            .collect();
        let body = MetadataRequest::default().with_topics(Some(topics));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, ApiKey::Metadata.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    fn decoded_topics(frame: Bytes) -> usize {
        match decode(frame, test_peer()).expect("decodes") {
            Decoded::Request(r) => match r.1 {
                RequestKind::Metadata(m) => m.topics.map_or(0, |t| t.len()),
                other => panic!("decoded as {other:?}"),
            },
            Decoded::UnsupportedApiVersions(_) => panic!("version refused"),
        }
    }

    #[test]
    fn arrays_decode_in_classic_and_flexible_versions() {
        assert_eq!(decoded_topics(metadata_frame(4, &["a", "b"])), 2);
        assert_eq!(decoded_topics(metadata_frame(12, &["a", "b", "c"])), 3);
    }

    /// Found by `make fuzz`: 17 bytes of Metadata v0 declaring 1.47 billion topics made the
    /// decoder ask for 106 GB, and the failed allocation aborted the broker.
    #[test]
    fn array_longer_than_the_frame_is_an_error_not_an_allocation() {
        let frame = Bytes::from_static(&[0, 3, 0, 0, 255, 44, 0, 13, 0, 0, 88, 0, 0, 0, 0, 7, 0]);
        let err = decode(frame, test_peer()).err().expect("refused");
        assert!(format!("{err:#}").contains("exceeds"), "{err:#}");
    }

    #[test]
    fn compact_array_longer_than_the_frame_is_an_error() {
        // Metadata v12 header (client id "test", no tagged fields), then a topics compact
        // array declaring 2^32 - 2 entries.
        let mut frame = BytesMut::from(&metadata_frame(12, &[])[..]);
        frame.truncate(frame.len() - 4); // drop the empty topics array and the body's fields
        frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0]);
        let err = decode(frame.freeze(), test_peer()).err().expect("refused");
        assert!(format!("{err:#}").contains("exceeds"), "{err:#}");
    }
}
