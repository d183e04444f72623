//! DeleteTopics: removes topics (by name, or by id from v6) through the metadata group.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::{errors, str_bytes};
use crate::broker::Broker;
use crate::group::records::OFFSETS_TOPIC;
use crate::metadata::{Command, Outcome};

pub async fn handle(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let view = match &name {
            Some(n) => broker.catalog.topic(n),
            None => broker.catalog.topic_by_id(id),
        };
        let result = DeletableTopicResult::default()
            .with_name(name.clone())
            .with_topic_id(id);
        let Some(view) = view else {
            let code = if name.is_some() {
                errors::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                errors::UNKNOWN_TOPIC_ID
            };
            responses.push(result.with_error_code(code));
            continue;
        };
        if view.name == OFFSETS_TOPIC {
            // The consumer groups' offsets live there.
            responses.push(
                result
                    .with_error_code(errors::INVALID_TOPIC_EXCEPTION)
                    .with_error_message(Some(str_bytes(format!(
                        "{OFFSETS_TOPIC} is internal and cannot be deleted"
                    )))),
            );
            continue;
        }
        let command = Command::DeleteTopic {
            name: view.name.clone(),
        };
        let code = match crate::cluster::propose_metadata(broker, &command, Duration::from_secs(30))
            .await
        {
            Ok(Outcome::TopicDeleted(..)) => errors::NONE,
            Ok(_) => errors::UNKNOWN_TOPIC_OR_PARTITION,
            Err(e) => errors::for_propose(e),
        };
        responses.push(
            result
                .with_name(Some(TopicName(str_bytes(view.name.clone()))))
                .with_topic_id(if version >= 6 { view.id } else { Uuid::nil() })
                .with_error_code(code),
        );
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
