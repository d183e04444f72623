//! The address book of other brokers: their cluster endpoints from the metadata log
//! (what each broker registered) or, until it registered, from its Join call or DNS
//! discovery, else from `--peers`. gRPC channels are made lazily, kept per peer, and reconnect by themselves.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::config::Peer;
use crate::metadata::Catalog;

pub struct Peers {
    me: u64,
    configured: HashMap<u64, String>,
    /// Addresses learned from Join calls and DNS discovery, before brokers registered.
    learned: Mutex<HashMap<u64, String>>,
    catalog: Arc<Catalog>,
    channels: Mutex<HashMap<u64, (String, Channel)>>,
    /// Peers a call just failed to reach (see [`Peers::suspect`]).
    suspects: Mutex<BTreeSet<u64>>,
    suspicion: tokio::sync::Notify,
    /// This broker is shutting down (see [`Peers::announce_stopping`]).
    stopping: AtomicBool,
}

impl Peers {
    pub fn new(me: u64, configured: &[Peer], catalog: Arc<Catalog>) -> Self {
        Peers {
            me,
            configured: configured
                .iter()
                .filter(|p| p.id != me)
                .map(|p| (p.id, p.addr.clone()))
                .collect(),
            learned: Mutex::default(),
            catalog,
            channels: Mutex::default(),
            suspects: Mutex::default(),
            suspicion: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// This broker is shutting down: its leadership reports say so from now on, and one
    /// goes to every peer at once, so that none hands it a leadership while it drains.
    pub fn announce_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.suspects.lock().unwrap().extend(self.ids());
        self.suspicion.notify_one();
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// A call to `id` failed (its connection broke): the leadership reports check it at
    /// once rather than at their next round, so that a broker whose process is gone is
    /// known to be gone within milliseconds (see `leadership.rs`).
    pub fn suspect(&self, id: u64) {
        self.suspects.lock().unwrap().insert(id);
        self.suspicion.notify_one();
    }

    /// Waits until some peer is suspected, and returns (and forgets) the suspects.
    pub async fn suspected(&self) -> Vec<u64> {
        loop {
            let taken: Vec<u64> = std::mem::take(&mut *self.suspects.lock().unwrap())
                .into_iter()
                .collect();
            if !taken.is_empty() {
                return taken;
            }
            self.suspicion.notified().await;
        }
    }

    /// Remembers a broker's address from its Join call or from DNS discovery.
    pub fn learn(&self, id: u64, addr: String) {
        if id != self.me {
            self.learned.lock().unwrap().insert(id, addr);
        }
    }

    /// Every other broker known, from `--peers` or the metadata log.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: BTreeSet<u64> = self.configured.keys().copied().collect();
        ids.extend(self.learned.lock().unwrap().keys().copied());
        ids.extend(self.catalog.brokers().iter().map(|b| b.id));
        ids.remove(&self.me);
        ids.into_iter().collect()
    }

    /// The peer's cluster endpoint: what it registered, else what was learned (its Join
    /// call, DNS), else what `--peers` said.
    pub fn addr(&self, id: u64) -> Option<String> {
        self.catalog
            .broker(id)
            .map(|b| b.cluster_addr)
            .or_else(|| self.learned.lock().unwrap().get(&id).cloned())
            .or_else(|| self.configured.get(&id).cloned())
    }

    /// A channel to the peer; `None` when its address is unknown or unusable.
    pub fn channel(&self, id: u64) -> Option<Channel> {
        let addr = self.addr(id)?;
        let mut channels = self.channels.lock().unwrap();
        if let Some((known, channel)) = channels.get(&id) {
            if *known == addr {
                return Some(channel.clone());
            }
        }
        let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(peer = id, %addr, error = %e, "unusable peer address");
                return None;
            }
        };
        let channel = endpoint
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(id, (addr, channel.clone()));
        Some(channel)
    }
}
