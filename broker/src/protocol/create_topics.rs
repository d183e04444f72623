//! CreateTopics: validates names, partition counts, replication factors and configs, then
//! commits the topic through the metadata Raft group.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use uuid::Uuid;

use super::{errors, str_bytes};
use crate::broker::Broker;
use crate::cluster::leadership::LIVENESS_WINDOW;
use crate::cluster::placement;
use crate::group::records::OFFSETS_TOPIC;
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
            Ok((partitions, rf, _)) if req.validate_only => Ok((Uuid::nil(), partitions, rf)),
            Ok((partitions, rf, configs)) => {
                let created = create(broker, &t.name, partitions, rf, configs).await;
                if created.is_ok() {
                    wait_for_leaders(broker, &t.name, req.timeout_ms).await;
                }
                created.map(|id| (id, partitions, rf))
            }
        };
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        results.push(match outcome {
            Ok((id, partitions, rf)) if version >= 5 => result
                .with_topic_id(if version >= 7 { id } else { Uuid::nil() })
                .with_num_partitions(partitions)
                .with_replication_factor(rf),
            Ok(_) => result,
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message))),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// As Kafka's CreateTopics, answers once the new partitions have leaders the cluster
/// knows, so that a client's first Metadata (on any broker) finds them: until every
/// partition has a leader here, and then one leadership-report round more for those this
/// broker leads (its peers learn of them from that report). Bounded by the request's
/// timeout; the topic exists either way.
async fn wait_for_leaders(broker: &Broker, name: &str, timeout_ms: i32) {
    let timeout = Duration::from_millis(timeout_ms.clamp(0, 30_000) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let me = broker.node_id as u64;
    loop {
        let leaders: Option<Vec<u64>> = broker
            .catalog
            .topic(name)
            .and_then(|t| t.partitions.iter().map(|p| p.leader()).collect());
        if let Some(leaders) = leaders {
            if leaders.contains(&me) {
                tokio::time::sleep_until(deadline.min(
                    tokio::time::Instant::now() + crate::cluster::leadership::REPORT_INTERVAL,
                ))
                .await;
            }
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                topic = name,
                "created; not every partition has a leader yet"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Validated = (i32, i16, BTreeMap<String, String>);

fn validate(
    broker: &Broker,
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
) -> Result<Validated, CreateError> {
    validate_name(&t.name)
        .map_err(|code| (code, format!("invalid topic name {:?}", t.name.as_str())))?;
    if t.name.as_str() == OFFSETS_TOPIC {
        return Err((
            errors::INVALID_REQUEST,
            format!("{OFFSETS_TOPIC} is internal: brokers make it when the first consumer group needs it"),
        ));
    }
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
    let available = super::metadata::known_brokers(broker).len();
    if rf < 1 || rf as usize > available {
        return Err((
            errors::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor must be between 1 and the {available} registered broker(s), got {rf}"
            ),
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
    Ok((partitions, rf, configs))
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

/// The brokers (sorted ids) that `rf` replicas of a new topic may go to. Brokers alive
/// first, as Kafka places replicas on unfenced brokers only: a broker that left (scaled
/// down, decommissioned) stays registered but holds nothing and is not heard from. Only
/// when too few are alive do others fill up to `rf`: first those that still hold replicas
/// (down for a moment: a restart, a crash loop; a quorum of the rest serves meanwhile),
/// then, in a cluster too new to have heard from its peers, the lowest registered ids.
pub fn placement_candidates(
    registered: &[u64],
    rf: usize,
    hosting: &HashSet<u64>,
    alive: impl Fn(u64) -> bool,
) -> Vec<u64> {
    let (mut chosen, rest): (Vec<u64>, Vec<u64>) = registered.iter().partition(|id| alive(**id));
    let (holding, idle): (Vec<u64>, Vec<u64>) =
        rest.into_iter().partition(|id| hosting.contains(id));
    for id in holding.into_iter().chain(idle) {
        if chosen.len() >= rf {
            break;
        }
        chosen.push(id);
    }
    chosen.sort_unstable();
    chosen
}

/// Commits a new topic with its replica assignment; returns its id once committed.
pub async fn create(
    broker: &Arc<Broker>,
    name: &str,
    partitions: i32,
    rf: i16,
    configs: BTreeMap<String, String>,
) -> Result<Uuid, CreateError> {
    let id = Uuid::new_v4();
    let mut brokers: Vec<u64> = super::metadata::known_brokers(broker)
        .iter()
        .map(|b| b.id as u64)
        .collect();
    brokers.sort_unstable();
    let me = broker.node_id as u64;
    let hosting: HashSet<u64> = broker
        .catalog
        .topics()
        .iter()
        .flat_map(|t| t.partitions.iter())
        .flat_map(|p| p.replicas().0)
        .collect();
    let brokers = placement_candidates(&brokers, rf.max(0) as usize, &hosting, |id| {
        (id == me || broker.catalog.peer_alive(id, LIVENESS_WINDOW))
            && !broker.catalog.is_leaving(id)
    });
    if rf < 1 || rf as usize > brokers.len() {
        return Err((
            errors::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {rf} needs more than the {} registered broker(s)",
                brokers.len()
            ),
        ));
    }
    // A random first broker, as Kafka picks, so that topics do not all start on one.
    let start = (id.as_u128() % brokers.len() as u128) as usize;
    let command = Command::CreateTopic {
        name: name.to_string(),
        id,
        partitions,
        configs,
        replicas: placement::assign(
            &brokers,
            &crate::cluster::racks(broker),
            partitions,
            rf as usize,
            start,
        ),
    };
    match crate::cluster::propose_metadata(broker, &command, Duration::from_secs(30)).await {
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

/// Makes the offsets topic in the background the first time a group needs it (once at a
/// time per broker; a failed attempt is retried by the next request that needs it). Its
/// replication factor is `offsets_topic_replication_factor`, capped by the metadata
/// group's size (a single broker gets one replica); placement refuses it until that many
/// brokers are registered, so a new cluster's first groups wait for their peers.
pub fn ensure_offsets_topic(broker: &Arc<Broker>) {
    if broker.catalog.topic(OFFSETS_TOPIC).is_some()
        || broker.groups.creating_topic.swap(true, Ordering::SeqCst)
    {
        return;
    }
    let broker = broker.clone();
    tokio::spawn(async move {
        let (voters, learners) = broker.catalog.metadata_members();
        let members = (voters.len() + learners.len()).max(1);
        let rf = broker
            .settings
            .offsets_topic_replication_factor
            .min(members as i16)
            .max(1);
        let configs = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "-1".to_string()),
        ]);
        let partitions = broker.settings.offsets_topic_partitions;
        match create(&broker, OFFSETS_TOPIC, partitions, rf, configs).await {
            Ok(_) => tracing::info!(partitions, rf, "created {OFFSETS_TOPIC}"),
            Err((_, why)) => tracing::info!("{OFFSETS_TOPIC} not created yet: {why}"),
        }
        broker.groups.creating_topic.store(false, Ordering::SeqCst);
    });
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
    fn placement_prefers_live_brokers_then_those_holding_replicas() {
        let hosting: HashSet<u64> = [1, 2, 3].into();
        let live = |ids: &'static [u64]| move |id| ids.contains(&id);
        let all = [1, 2, 3, 4, 5];
        // Brokers 4 and 5 left (alive: no; holding: nothing).
        assert_eq!(
            placement_candidates(&all, 3, &hosting, live(&[1, 2, 3])),
            [1, 2, 3]
        );
        // Broker 3 is down for a moment: it still counts, the departed ones do not.
        assert_eq!(
            placement_candidates(&all, 3, &hosting, live(&[1, 2])),
            [1, 2, 3]
        );
        // More live brokers than the factor: all of them, for the rotation to spread.
        assert_eq!(
            placement_candidates(&all, 2, &hosting, live(&[1, 2, 4])),
            [1, 2, 4]
        );
        // A new cluster that has heard from no peer yet.
        assert_eq!(
            placement_candidates(&all, 3, &HashSet::new(), live(&[5])),
            [1, 2, 5]
        );
        // Too few registered: the caller refuses the factor.
        assert_eq!(
            placement_candidates(&[1, 2], 3, &hosting, live(&[1, 2])),
            [1, 2]
        );
    }

    #[test]
    fn configs_are_checked() {
        assert!(check_config("retention.ms", "1000").is_ok());
        assert!(check_config("retention.ms", "soon").is_err());
        assert!(check_config("cleanup.policy", "compact").is_err());
        assert!(check_config("no.such.config", "1").is_err());
    }
}
