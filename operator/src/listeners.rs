//! Where clients connect: `status.listeners`, one bootstrap list per listener, as pure
//! functions of the cluster and its pods (Strimzi's status has the same shape, so that a
//! script finds the address with one jsonpath).

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::{ChronikCluster, ListenerStatus};
use crate::resources::{Names, KAFKA_PORT, POD_INDEX_LABEL};

pub const INTERNAL: &str = "internal";
pub const EXTERNAL: &str = "external";

/// The internal listener bootstraps through the client Service; the external one lists
/// every broker pod that has a node, at its advertised host and node port.
pub fn statuses(cluster: &ChronikCluster, pods: &[Pod]) -> Vec<ListenerStatus> {
    let names = Names::of(cluster);
    let mut listeners = vec![ListenerStatus {
        name: INTERNAL.into(),
        bootstrap_servers: format!(
            "{}.{}.svc:{KAFKA_PORT}",
            names.client_service, names.namespace
        ),
    }];
    if let Some(external) = &cluster.spec.listeners.external {
        let mut brokers: Vec<(i32, String)> = pods
            .iter()
            .filter_map(|p| {
                let id = p.labels().get(POD_INDEX_LABEL)?.parse::<i32>().ok()?;
                let host = match &external.advertised_host {
                    Some(h) => h.clone(),
                    None => p.status.as_ref()?.host_ip.clone()?,
                };
                Some((id, format!("{host}:{}", external.node_port_base + id)))
            })
            .collect();
        brokers.sort();
        listeners.push(ListenerStatus {
            name: EXTERNAL.into(),
            bootstrap_servers: brokers
                .into_iter()
                .map(|(_, a)| a)
                .collect::<Vec<_>>()
                .join(","),
        });
    }
    listeners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExternalListener, ExternalListenerType, Listeners};
    use crate::ChronikClusterSpec;
    use k8s_openapi::api::core::v1::PodStatus;
    use serde_json::json;

    fn cluster(external: Option<ExternalListener>) -> ChronikCluster {
        let spec: ChronikClusterSpec =
            serde_json::from_value(json!({"replicas": 3, "image": "chronik:1"})).unwrap();
        let mut c = ChronikCluster::new(
            "events",
            ChronikClusterSpec {
                listeners: Listeners { external },
                ..spec
            },
        );
        c.metadata.namespace = Some("kafka".into());
        c
    }

    fn pod(id: i32, host_ip: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.labels = Some([(POD_INDEX_LABEL.to_string(), id.to_string())].into());
        p.status = Some(PodStatus {
            host_ip: host_ip.map(Into::into),
            ..PodStatus::default()
        });
        p
    }

    #[test]
    fn internal_listener_is_the_client_service() {
        let s = statuses(&cluster(None), &[pod(1, Some("10.0.0.1"))]);
        assert_eq!(
            s,
            vec![ListenerStatus {
                name: "internal".into(),
                bootstrap_servers: "events.kafka.svc:9092".into()
            }]
        );
    }

    #[test]
    fn external_listener_lists_each_scheduled_broker_at_its_node_port() {
        let external = ExternalListener {
            type_: ExternalListenerType::NodePort,
            node_port_base: 31090,
            advertised_host: None,
        };
        let pods = [
            pod(2, Some("10.0.0.2")),
            pod(1, Some("10.0.0.1")),
            pod(3, None),
        ];
        let s = statuses(&cluster(Some(external.clone())), &pods);
        assert_eq!(s[1].name, "external");
        assert_eq!(s[1].bootstrap_servers, "10.0.0.1:31091,10.0.0.2:31092");

        let named = ExternalListener {
            advertised_host: Some("kafka.example.com".into()),
            ..external
        };
        let s = statuses(&cluster(Some(named)), &pods);
        assert_eq!(
            s[1].bootstrap_servers,
            "kafka.example.com:31091,kafka.example.com:31092,kafka.example.com:31093"
        );
    }
}
