//! CreateTopics: validates names, partition counts, replication factors and configs, then
//! commits the topic through the metadata Raft group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use uuid::Uuid;

use super::{errors, str_bytes};
use crate::broker::Broker;
use crate::metadata::{Command, Outcome};

/// Topic configs this broker understands; anything else is INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "cleanup.policy",
    "max.message.bytes",
    "min.insync.replicas",
    "segment.bytes",
    "segment.ms",
    "compression.type",
    "message.timestamp.type",
];

pub type CreateError = (i16, String);

pub async fn handle(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let outcome = match validate(broker, &t) {
            Err(e) => Err(e),
            Ok((partitions, _)) if req.validate_only => Ok((Uuid::nil(), partitions)),
            Ok((partitions, configs)) => create(broker, &t.name, partitions, configs)
                .await
                .map(|id| (id, partitions)),
        };
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        results.push(match outcome {
            Ok((id, partitions)) if version >= 5 => result
                .with_topic_id(if version >= 7 { id } else { Uuid::nil() })
                .with_num_partitions(partitions)
                .with_replication_factor(1),
            Ok(_) => result,
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message))),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

type Validated = (i32, BTreeMap<String, String>);

fn validate(
    broker: &Broker,
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<Validated, CreateError> {
    validate_name(&t.name)
        .map_err(|code| (code, format!("invalid topic name {:?}", t.name.as_str())))?;
    if !t.assignments.is_empty() {
        return Err((
            errors::INVALID_REQUEST,
            "manual replica assignment is not supported".into(),
        ));
    }
    let partitions = match t.num_partitions {
        -1 => broker.settings.default_partitions,
        n => n,
    };
    let max = broker.settings.max_partitions_per_topic;
    if partitions < 1 || partitions > max {
        return Err((
            errors::INVALID_PARTITIONS,
            format!("partition count must be between 1 and {max}, got {partitions}"),
        ));
    }
    let rf = match t.replication_factor {
        -1 => broker.settings.default_replication_factor,
        n => n,
    };
    if rf != 1 {
        return Err((
            errors::INVALID_REPLICATION_FACTOR,
            format!("replication factor {rf} is larger than the 1 available broker"),
        ));
    }
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        let name = c.name.as_str();
        let value = c
            .value
            .as_ref()
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        check_config(name, &value)?;
        configs.insert(name.to_string(), value);
    }
    Ok((partitions, configs))
}

fn check_config(name: &str, value: &str) -> Result<(), CreateError> {
    let bad = |why: &str| Err((errors::INVALID_CONFIG, format!("{name}={value}: {why}")));
    match name {
        "retention.ms" | "retention.bytes" | "segment.ms" => match value.parse::<i64>() {
            Ok(v) if v >= -1 => Ok(()),
            _ => bad("must be an integer >= -1"),
        },
        "max.message.bytes" | "min.insync.replicas" | "segment.bytes" => match value.parse::<i32>()
        {
            Ok(v) if v >= 1 => Ok(()),
            _ => bad("must be a positive integer"),
        },
        "cleanup.policy" if value != "delete" => bad("only the delete policy is supported"),
        "message.timestamp.type" if value != "CreateTime" => bad("only CreateTime is supported"),
        n if TOPIC_CONFIGS.contains(&n) => Ok(()),
        _ => bad("unknown topic config"),
    }
}

/// Kafka's rules: 1-249 characters of [a-zA-Z0-9._-], and not "." or "..".
pub fn validate_name(name: &str) -> Result<(), i16> {
    let legal = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 249 || name == "." || name == ".." || !legal {
        return Err(errors::INVALID_TOPIC_EXCEPTION);
    }
    Ok(())
}

/// Commits a new topic; returns its id once every partition group is up.
pub async fn create(
    broker: &Arc<Broker>,
    name: &str,
    partitions: i32,
    configs: BTreeMap<String, String>,
) -> Result<Uuid, CreateError> {
    let id = Uuid::new_v4();
    let command = Command::CreateTopic {
        name: name.to_string(),
        id,
        partitions,
        configs,
    };
    match broker
        .raft
        .propose_metadata(&command, Duration::from_secs(30))
        .await
    {
        Ok(Outcome::TopicCreated(..)) => {
            tracing::info!(topic = name, partitions, "topic created");
            Ok(id)
        }
        Ok(Outcome::TopicExists) => Err((
            errors::TOPIC_ALREADY_EXISTS,
            format!("topic {name} already exists"),
        )),
        Ok(other) => Err((
            errors::UNKNOWN_SERVER_ERROR,
            format!("unexpected {other:?}"),
        )),
        Err(e) => Err((errors::for_propose(e), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_name("orders.v1_EU-2").is_ok());
        for bad in ["", ".", "..", "has space", "slash/y", &"x".repeat(250)] {
            assert_eq!(
                validate_name(bad),
                Err(errors::INVALID_TOPIC_EXCEPTION),
                "{bad}"
            );
        }
    }

    #[test]
    fn configs_are_checked() {
        assert!(check_config("retention.ms", "1000").is_ok());
        assert!(check_config("retention.ms", "soon").is_err());
        assert!(check_config("cleanup.policy", "compact").is_err());
        assert!(check_config("no.such.config", "1").is_err());
    }
}
