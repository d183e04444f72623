//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one reconciles. The holder renews the Lease well inside its duration;
//! another replica takes it over only once it has expired. Every write carries the
//! resourceVersion it read, so two candidates racing for an expired Lease cannot both win
//! (the API server refuses the second with a conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;

#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes the Lease if it is free or expired, renews it if held: whether this
    /// replica leads now. Conflicts (another replica won the race) answer `false`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let created = self
                .api
                .create(&PostParams::default(), &self.lease(None, now, 0))
                .await;
            return conflict_is_false(created.map(|_| true));
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let mine = holder == Some(self.identity.as_str());
        let expired = match (spec.renew_time.as_ref(), spec.lease_duration_seconds) {
            (Some(renewed), Some(secs)) => {
                renewed.0.as_second() + i64::from(secs) < now.as_second()
            }
            _ => true,
        };
        if !mine && holder.is_some() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine { spec.acquire_time } else { None };
        let mut next = self.lease(acquired, now, transitions);
        next.metadata.resource_version = lease.metadata.resource_version.clone();
        let replaced = self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await;
        conflict_is_false(replaced.map(|_| true))
    }

    /// Gives the Lease up (on shutdown) so that another replica need not wait it out.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| true),
        )
        .map(|_| ())
    }

    fn lease(&self, acquired: Option<MicroTime>, now: Timestamp, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
                acquire_time: acquired.or(Some(MicroTime(now))),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }
}

fn conflict_is_false(result: Result<bool, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        other => other,
    }
}
