//! Driver tests: a single node, and clusters of drivers in one process whose transport
//! can cut nodes off and whose log writers can be held back, so that the interleavings
//! that matter (a Ready with nothing to persist while an earlier write is still queued)
//! happen every time instead of now and then under load.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::eraftpb::Message;

use super::{Applied, Driver, DriverConfig, Pending, RaftHandle, Transport, WriteHook};
use crate::log::{self, batch::tests::make_batch, AppendOutcome};
use crate::metadata::{Catalog, Command, Outcome};
use crate::metrics;
use crate::storage::{self, Db};

fn config() -> DriverConfig {
    DriverConfig {
        node_id: 1,
        voters: vec![1],
        learners: vec![],
        tick: Duration::from_millis(100),
        retention_check: Duration::from_secs(3600),
        retention_ms: -1,
        retention_bytes: -1,
        disk: Default::default(),
        metadata_voters: 0,
        metadata_snapshot_entries: 0,
    }
}

/// A single-node driver (no peers) over `db`.
fn start_single(
    cfg: DriverConfig,
    db: &Db,
    catalog: &Arc<Catalog>,
) -> (RaftHandle, JoinHandle<()>) {
    Driver::start(
        cfg,
        db.clone(),
        catalog.clone(),
        Box::new(crate::raft::NoPeers),
    )
    .unwrap()
}

async fn create_topic(h: &RaftHandle, name: &str, partitions: i32) -> Vec<u64> {
    let command = Command::CreateTopic {
        name: name.into(),
        id: uuid::Uuid::new_v4(),
        partitions,
        configs: Default::default(),
        replicas: vec![],
    };
    match h.propose_metadata(&command, Duration::from_secs(5)).await {
        Ok(Outcome::TopicCreated(_, record)) => record.groups,
        other => panic!("create failed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_fsyncs_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = storage::open(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::default());
    let (h, thread) = start_single(config(), &db, &catalog);
    let groups = create_topic(&h, "t", 4).await;
    assert_eq!(catalog.topic("t").unwrap().partitions.len(), 4);

    let syncs_before = metrics::RAFT_SYNC_SECONDS.get_sample_count();
    // 400 single-record batches over 4 partitions, all queued before any is awaited.
    let pending: Vec<(u64, Pending)> = (0..400)
        .map(|i| {
            let g = groups[i % 4];
            (g, h.propose(g, make_batch(1, -1, -1, b"payload").to_vec()))
        })
        .collect();
    let mut offsets: HashMap<u64, Vec<i64>> = HashMap::new();
    for (g, p) in pending {
        match p.wait(Duration::from_secs(10)).await.unwrap() {
            Applied::Partition(AppendOutcome::Appended { base_offset }) => {
                offsets.entry(g).or_default().push(base_offset)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let syncs = metrics::RAFT_SYNC_SECONDS.get_sample_count() - syncs_before;
    assert!(
        syncs < 100,
        "400 proposals took {syncs} fsyncs: no group commit"
    );
    for g in &groups {
        assert_eq!(offsets[g], (0..100).collect::<Vec<i64>>(), "group {g}");
    }
    for p in &catalog.topic("t").unwrap().partitions {
        assert_eq!(p.high_watermark(), 100);
    }

    h.shutdown();
    thread.join().unwrap();
    drop(db);

    // Restart from disk: topics, offsets and the data itself are back.
    let db = storage::open(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::default());
    let (h, thread) = start_single(config(), &db, &catalog);
    let t = catalog.topic("t").expect("topic survives restart");
    for p in &t.partitions {
        assert_eq!(p.high_watermark(), 100);
        let data = log::read::read(&db, p, 99, 1 << 20).unwrap();
        let stamped = i64::from_be_bytes(data[0..8].try_into().unwrap());
        assert_eq!(stamped, 99);
    }
    // Offsets continue where they stopped.
    let next = propose(&h, groups[0], make_batch(2, -1, -1, b"x").to_vec())
        .await
        .unwrap();
    assert_eq!(
        next,
        Applied::Partition(AppendOutcome::Appended { base_offset: 100 })
    );
    h.shutdown();
    thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_bytes_moves_log_start_and_compacts_raft_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = storage::open(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::default());
    let mut cfg = config();
    cfg.retention_check = Duration::from_millis(200);
    let (h, thread) = start_single(cfg, &db, &catalog);
    let command = Command::CreateTopic {
        name: "small".into(),
        id: uuid::Uuid::new_v4(),
        partitions: 1,
        configs: [("retention.bytes".to_string(), "1000".to_string())].into(),
        replicas: vec![],
    };
    let group = match h.propose_metadata(&command, Duration::from_secs(5)).await {
        Ok(Outcome::TopicCreated(_, r)) => r.groups[0],
        other => panic!("{other:?}"),
    };
    for _ in 0..20 {
        propose(&h, group, make_batch(1, -1, -1, &[0u8; 200]).to_vec())
            .await
            .unwrap();
    }
    let p = catalog.partition("small", 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.log_start() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(p.log_start() > 0, "retention never moved the log start");
    assert!(
        p.log_bytes() <= 1000 + 261,
        "log still holds {} bytes",
        p.log_bytes()
    );
    assert_eq!(p.high_watermark(), 20);
    // Reading below the new start finds the first retained batch, never a hole.
    let data = log::read::read(&db, &p, 0, 1 << 20).unwrap();
    let first = i64::from_be_bytes(data[0..8].try_into().unwrap());
    assert_eq!(first, p.log_start());
    h.shutdown();
    thread.join().unwrap();
}

/// DeleteRecords' control entry: the log start moves at once, never back and never past
/// the high watermark, survives a restart, and the retention pass frees the batches
/// wholly below it although the topic has no retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_start_entry_moves_the_start_and_retention_frees_what_is_below() {
    use crate::log::control::Control;
    let dir = tempfile::tempdir().unwrap();
    let db = storage::open(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::default());
    let mut cfg = config();
    cfg.retention_check = Duration::from_millis(200);
    let (h, thread) = start_single(cfg.clone(), &db, &catalog);
    let group = create_topic(&h, "t", 1).await[0];
    for _ in 0..10 {
        propose(&h, group, make_batch(3, -1, -1, &[7u8; 100]).to_vec())
            .await
            .unwrap();
    }
    let p = catalog.partition("t", 0).unwrap();
    let bytes_before = p.log_bytes();
    let first_stored = |p: &log::PartitionShared| {
        let data = log::read::read(&db, p, 0, 1).unwrap();
        i64::from_be_bytes(data[0..8].try_into().unwrap())
    };
    let move_to = |offset| propose(&h, group, Control::LogStart(offset).encode());
    assert_eq!(
        move_to(13).await.unwrap(),
        Applied::Partition(AppendOutcome::LogStartMoved { log_start: 13 })
    );
    assert_eq!((p.log_start(), p.high_watermark()), (13, 30));
    // The batches wholly below 13 (offsets 0-11) go; the one holding 13 stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    while first_stored(&p) != 12 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        first_stored(&p),
        12,
        "retention never freed the batches below"
    );
    assert!(
        p.log_bytes() < bytes_before,
        "{} bytes still counted",
        p.log_bytes()
    );
    assert_eq!(
        p.log_start(),
        13,
        "freeing batches moved the start back to a boundary"
    );
    // Never backwards, never past the high watermark.
    assert_eq!(
        move_to(5).await.unwrap(),
        Applied::Partition(AppendOutcome::LogStartMoved { log_start: 13 })
    );
    assert_eq!(
        move_to(1000).await.unwrap(),
        Applied::Partition(AppendOutcome::LogStartMoved { log_start: 30 })
    );
    // Records still get the next offsets.
    assert_eq!(
        propose(&h, group, make_batch(1, -1, -1, b"x").to_vec())
            .await
            .unwrap(),
        Applied::Partition(AppendOutcome::Appended { base_offset: 30 })
    );
    h.shutdown();
    thread.join().unwrap();
    drop(p);
    let catalog = Arc::new(Catalog::default());
    let (h, thread) = start_single(cfg, &db, &catalog);
    let p = catalog.partition("t", 0).unwrap();
    assert_eq!((p.log_start(), p.high_watermark()), (30, 31));
    h.shutdown();
    thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_log_compacts_and_a_restart_starts_from_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let db = storage::open(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::default());
    let mut cfg = config();
    cfg.metadata_snapshot_entries = 20;
    let (h, thread) = start_single(cfg.clone(), &db, &catalog);
    for i in 0..150 {
        create_topic(&h, &format!("t{i}"), 1).await;
    }
    let truncated = || {
        db.get(storage::keys::group_key(storage::keys::TRUNCATED, 0))
            .unwrap()
            .map(|raw| u64::from_be_bytes(raw[0..8].try_into().unwrap()))
    };
    wait_for("the metadata log's compaction", truncated).await;
    let first_entry = db
        .iterator(rocksdb::IteratorMode::From(
            &storage::keys::entry_key(0, 0),
            rocksdb::Direction::Forward,
        ))
        .next()
        .unwrap()
        .unwrap()
        .0;
    assert!(
        storage::keys::u64_suffix(&first_entry) > truncated().unwrap(),
        "entries up to the compaction point are gone"
    );
    h.shutdown();
    thread.join().unwrap();
    drop(db);

    // From the catalog on disk and the log after the compaction point: every topic is
    // back, and the log goes on.
    let db = storage::open(dir.path()).unwrap();
    let catalog = Arc::new(Catalog::default());
    let (h, thread) = start_single(cfg, &db, &catalog);
    assert_eq!(catalog.topics().len(), 150);
    let groups = create_topic(&h, "after", 1).await;
    assert_eq!(groups, vec![151], "group ids go on from the stored counter");
    h.shutdown();
    thread.join().unwrap();
}

// -- Clusters of drivers in one process ---------------------------------------------------

/// The network between in-process drivers: delivers each node's messages to the others,
/// except to and from nodes that are cut off.
#[derive(Default)]
struct Net {
    handles: Mutex<HashMap<u64, RaftHandle>>,
    dbs: Mutex<HashMap<u64, Db>>,
    cut: Mutex<HashSet<u64>>,
}

impl Net {
    fn cut_off(&self, node: u64) {
        self.cut.lock().unwrap().insert(node);
    }
    fn heal(&self, node: u64) {
        self.cut.lock().unwrap().remove(&node);
    }
}

struct NetTransport {
    me: u64,
    net: Arc<Net>,
}

impl Transport for NetTransport {
    fn send(&self, to: u64, messages: Vec<(u64, Message)>) {
        let cut = self.net.cut.lock().unwrap();
        if cut.contains(&to) || cut.contains(&self.me) {
            return;
        }
        let (snapshots, messages): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|(_, m)| m.msg_type == raft::eraftpb::MessageType::MsgSnapshot as i32);
        for (group, m) in snapshots {
            self.deliver_snapshot(to, group, m);
        }
        if let Some(h) = self.net.handles.lock().unwrap().get(&to) {
            h.step(messages);
        }
    }
}

impl NetTransport {
    /// What the gRPC transport and the cluster service do with a snapshot, minus the
    /// network: batches read from the sender's store into files on the receiver's, then
    /// handed to the receiver's driver, and the sender told.
    fn deliver_snapshot(&self, to: u64, group: u64, m: Message) {
        let dbs = self.net.dbs.lock().unwrap();
        let (from_db, to_db) = (dbs[&self.me].clone(), dbs[&to].clone());
        let handles = self.net.handles.lock().unwrap();
        let (sender, receiver) = (handles[&self.me].clone(), handles[&to].clone());
        std::thread::spawn(move || {
            use crate::log::snapshot::{self, Builder};
            use prost::Message as _;
            let s = m.snapshot.clone().unwrap();
            let data =
                chronik_api::cluster::v1::PartitionSnapshot::decode(s.data.as_slice()).unwrap();
            let opts = rocksdb::Options::default();
            let dir = snapshot::incoming_dir(&to_db);
            let mut b = Builder::new(&opts, &dir, group, s.get_metadata().index).unwrap();
            let (n, bytes) =
                snapshot::read_batches(&from_db, group, &data, |c| b.add(&c).is_ok()).unwrap();
            let received = b.finish(&s, n, bytes).unwrap();
            receiver.install_snapshot(group, m, received);
            sender.snapshot_sent(group, to, true);
        });
    }
}

/// Holds a log writer back while closed: what it was handed stays queued, unwritten.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }
    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }
}

struct Node {
    id: u64,
    _dir: tempfile::TempDir,
    catalog: Arc<Catalog>,
    handle: RaftHandle,
    thread: Option<JoinHandle<()>>,
    gate: Arc<Gate>,
}

struct Cluster {
    net: Arc<Net>,
    nodes: Vec<Node>,
}

impl Cluster {
    fn start(ids: &[u64]) -> Cluster {
        Self::start_ticking(ids, Duration::from_millis(20))
    }

    /// A cluster whose Raft ticks every `tick` (an election times out after 10 to 20).
    fn start_ticking(ids: &[u64], tick: Duration) -> Cluster {
        let net = Arc::new(Net::default());
        let nodes = ids
            .iter()
            .map(|&id| {
                let dir = tempfile::tempdir().unwrap();
                let db = storage::open(dir.path()).unwrap();
                let catalog = Arc::new(Catalog::default());
                let gate = Arc::new(Gate::default());
                let hook: WriteHook = {
                    let gate = gate.clone();
                    Arc::new(move || gate.pass())
                };
                let cfg = DriverConfig {
                    node_id: id,
                    voters: ids.to_vec(),
                    tick,
                    retention_check: Duration::from_millis(100),
                    ..config()
                };
                net.dbs.lock().unwrap().insert(id, db.clone());
                let transport = Box::new(NetTransport {
                    me: id,
                    net: net.clone(),
                });
                let (handle, thread) =
                    Driver::start_with(cfg, db, catalog.clone(), transport, Some(hook)).unwrap();
                net.handles.lock().unwrap().insert(id, handle.clone());
                Node {
                    id,
                    _dir: dir,
                    catalog,
                    handle,
                    thread: Some(thread),
                    gate,
                }
            })
            .collect();
        Cluster { net, nodes }
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a node of the cluster")
    }

    /// Waits for a metadata leader all nodes agree on, then creates a one-partition topic
    /// replicated on `replicas` (the first its preferred leader) and waits for that leader.
    async fn topic(&self, name: &str, replicas: &[u64]) {
        self.topic_with(name, replicas, Default::default()).await
    }

    async fn metadata_leader(&self) -> u64 {
        wait_for("a metadata leader", || {
            let l = self.nodes[0].catalog.metadata_leader()?;
            self.nodes
                .iter()
                .all(|n| n.catalog.metadata_leader() == Some(l))
                .then_some(l)
        })
        .await
    }

    /// As [`Self::topic`], with topic configs.
    async fn topic_with(
        &self,
        name: &str,
        replicas: &[u64],
        configs: std::collections::BTreeMap<String, String>,
    ) {
        let leader = self.metadata_leader().await;
        let command = Command::CreateTopic {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            partitions: 1,
            configs,
            replicas: vec![replicas.to_vec()],
        };
        let outcome = self
            .node(leader)
            .handle
            .propose_metadata(&command, Duration::from_secs(10))
            .await;
        assert!(
            matches!(outcome, Ok(Outcome::TopicCreated(..))),
            "{outcome:?}"
        );
        wait_for("the partition's preferred leader", || {
            let p = self.node(replicas[0]).catalog.partition(name, 0)?;
            (p.leader() == Some(replicas[0])).then_some(())
        })
        .await;
    }

    fn group(&self, topic: &str) -> u64 {
        self.nodes[0].catalog.partition(topic, 0).unwrap().group
    }

    fn high_watermark(&self, node: u64, topic: &str) -> i64 {
        self.node(node)
            .catalog
            .partition(topic, 0)
            .map_or(-1, |p| p.high_watermark())
    }

    /// Waits until every node's high watermark of the topic's partition 0 is `hw`.
    async fn wait_high_watermarks(&self, topic: &str, hw: i64) {
        for n in &self.nodes {
            wait_for("equal high watermarks", || {
                (self.high_watermark(n.id, topic) == hw).then_some(())
            })
            .await;
        }
    }

    /// Waits until the high watermark of the topic's partition 0 on `nodes` is `hw`.
    async fn wait_high_watermarks_of(&self, nodes: &[u64], topic: &str, hw: i64) {
        for &n in nodes {
            wait_for("equal high watermarks", || {
                (self.high_watermark(n, topic) == hw).then_some(())
            })
            .await;
        }
    }

    /// Fails the test if a driver thread ended (raft-rs panics end it).
    fn assert_drivers_alive(&self) {
        for n in &self.nodes {
            let finished = n.thread.as_ref().is_some_and(|t| t.is_finished());
            assert!(!finished, "the driver of node {} stopped", n.id);
        }
    }

    fn stop(mut self) {
        for n in &mut self.nodes {
            n.gate.open();
            n.handle.shutdown();
            if let Some(t) = n.thread.take() {
                t.join().expect("driver thread panicked");
            }
        }
    }
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Proposes one batch and waits up to 5 s for its outcome.
async fn propose(
    h: &RaftHandle,
    group: u64,
    batch: Vec<u8>,
) -> Result<Applied, super::ProposeError> {
    h.propose(group, batch).wait(Duration::from_secs(5)).await
}

/// Asserts that a proposal was answered NOT_LEADER_OR_FOLLOWER; `what` names it.
fn assert_not_leader(outcome: &Result<Applied, super::ProposeError>, what: &str) {
    assert!(
        matches!(outcome, Err(super::ProposeError::NotLeader)),
        "{what}: {outcome:?}"
    );
}

async fn produce(h: &RaftHandle, group: u64) -> Applied {
    h.propose(group, make_batch(1, -1, -1, b"r").to_vec())
        .wait(Duration::from_secs(10))
        .await
        .expect("committed")
}

/// Three nodes with topic "t" replicated on all, led by node 1, holding one committed
/// record; returns the cluster and the partition's group.
async fn three_nodes_with_one_record() -> (Cluster, u64) {
    let cluster = Cluster::start(&[1, 2, 3]);
    cluster.topic("t", &[1, 2, 3]).await;
    let group = cluster.group("t");
    produce(&cluster.node(1).handle, group).await;
    (cluster, group)
}

/// A leader whose broker refuses connections is replaced at once: the lowest surviving
/// voter starts an election that its peers' leader lease does not hold up, long before
/// any election timeout (2 to 4 s here). Another voter told the same does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_broker_is_gone_is_replaced_without_an_election_timeout() {
    let cluster = Cluster::start_ticking(&[1, 2, 3], Duration::from_millis(200));
    cluster.topic("t", &[1, 2, 3]).await;
    let group = cluster.group("t");
    produce(&cluster.node(1).handle, group).await;
    let led_by = |node: u64| {
        let p = cluster.node(node).catalog.partition("t", 0).unwrap();
        (p.leader(), p.leader_epoch())
    };
    let (_, epoch) = led_by(1);

    cluster.net.cut_off(1);
    let down_at = Instant::now();
    cluster.node(3).handle.peer_down(1); // (not the successor: nothing happens)
    cluster.node(2).handle.peer_down(1);
    wait_for("node 2 to lead", || (led_by(2).0 == Some(2)).then_some(())).await;
    let took = down_at.elapsed();
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    assert!(led_by(2).1 > epoch);
    // The new leader commits, with node 3.
    produce(&cluster.node(2).handle, group).await;
    cluster.wait_high_watermarks_of(&[2, 3], "t", 2).await;
    cluster.assert_drivers_alive();
    cluster.stop();
}

/// A leader whose own write is still queued must not count itself towards the commit
/// quorum. With one follower cut off, the other follower's acknowledgement alone is no
/// majority: the record must wait for the leader's write. (Before the fix, the leader's
/// next heartbeat Ready, with nothing to persist, was finished with `advance`, which told
/// raft-rs that the queued write was done, and the record was acknowledged while on one
/// disk only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_never_counts_its_own_unwritten_entries() {
    let (cluster, group) = three_nodes_with_one_record().await;
    let leader = cluster.node(1);

    cluster.net.cut_off(3);
    leader.gate.close();
    let pending: Pending = leader
        .handle
        .propose(group, make_batch(1, -1, -1, b"gated").to_vec());
    // Dozens of heartbeat rounds (a heartbeat every 40 ms) pass while the write is held.
    let early = pending.wait(Duration::from_millis(1500)).await;
    assert!(
        early.is_err(),
        "acknowledged before the leader's own write: {early:?}"
    );
    assert_eq!(cluster.high_watermark(1, "t"), 1, "applied before written");
    leader.gate.open();
    wait_for("the held record to commit", || {
        (cluster.high_watermark(1, "t") == 2).then_some(())
    })
    .await;
    cluster.net.heal(3);
    produce(&leader.handle, group).await;
    cluster.wait_high_watermarks("t", 3).await;
    cluster.assert_drivers_alive();
    cluster.stop();
}

/// A follower whose writer lags applies only what it has written. (Before the fix it
/// applied entries still queued in its writer, released them from the entry cache, and
/// raft-rs panicked with "term(N) must be valid" when it next asked for one of them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_lagging_writer_applies_only_what_it_wrote() {
    let (cluster, group) = three_nodes_with_one_record().await;
    let leader = cluster.node(1);
    wait_for("follower 2 to apply", || {
        (cluster.high_watermark(2, "t") == 1).then_some(())
    })
    .await;

    cluster.node(2).gate.close();
    for _ in 0..20 {
        produce(&leader.handle, group).await; // committed by nodes 1 and 3
    }
    // Heartbeats keep arriving at node 2 while its writes are held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.high_watermark(2, "t"),
        1,
        "node 2 applied entries its writer has not written"
    );
    cluster.node(2).gate.open();
    for _ in 0..5 {
        produce(&leader.handle, group).await;
    }
    cluster.wait_high_watermarks("t", 26).await;
    cluster.assert_drivers_alive();
    cluster.stop();
}

/// A leader cut off from its followers steps down (check_quorum) and answers its waiting
/// proposals with NOT_LEADER at once, so that clients look for the new leader instead of
/// waiting out their request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_answers_its_waiting_proposals_with_not_leader() {
    let (cluster, group) = three_nodes_with_one_record().await;
    let leader = cluster.node(1);

    cluster.net.cut_off(1);
    let started = Instant::now();
    let outcome = propose(
        &leader.handle,
        group,
        make_batch(1, -1, -1, b"stranded").to_vec(),
    )
    .await;
    assert!(
        matches!(outcome, Err(super::ProposeError::NotLeader)),
        "{outcome:?} after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    cluster.net.heal(1);
    cluster.assert_drivers_alive();
    cluster.stop();
}

/// A batch refused without being written (here: dropped by raft-rs while a leadership
/// transfer is pending) holds back the producer's later batches until it comes back, so
/// that they never reach the log behind a gap. (Before the fence, the next batch was
/// committed and answered OUT_OF_ORDER_SEQUENCE_NUMBER, on which librdkafka bumps its
/// epoch for every partition and renumbers batches another leader may have committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_holds_back_the_producers_next_ones() {
    let (cluster, group) = three_nodes_with_one_record().await;
    let leader = cluster.node(1);
    // Node 2 gets ahead of node 3 in the leader's view, then is cut off: the transfer
    // goes to node 2 and stays pending while node 3 keeps the leader's quorum.
    cluster.net.cut_off(3);
    for _ in 0..3 {
        produce(&leader.handle, group).await;
    }
    cluster.net.cut_off(2);
    cluster.net.heal(3);
    assert!(leader.handle.transfer_leadership(vec![]).await > 0);
    let idempotent = |seq| make_batch(1, 7, seq, b"idempotent").to_vec();
    let first = propose(&leader.handle, group, idempotent(0)).await;
    assert_not_leader(&first, "first");
    // The transfer lapses (an election timeout) and node 1 leads on.
    wait_for("the transfer to lapse", || {
        let p = leader.catalog.partition("t", 0)?;
        (p.leader() == Some(1) && p.high_watermark() == 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = propose(&leader.handle, group, idempotent(1)).await;
    assert_not_leader(&second, "the batch after a refused one");
    for (seq, offset) in [(0, 4), (1, 5)] {
        let outcome = propose(&leader.handle, group, idempotent(seq)).await;
        assert_eq!(
            outcome,
            Ok(Applied::Partition(AppendOutcome::Appended {
                base_offset: offset
            })),
            "the resent batch {seq}"
        );
    }
    cluster.net.heal(2);
    cluster.assert_drivers_alive();
    cluster.stop();
}

/// The gap a chaos run found: a node refuses batch 1 (not the leader yet) and holds back
/// batch 2 behind it; batch 1 then commits through the old leader and the node applies
/// it. Batch 3 must still wait for batch 2 once the node leads. (The commit used to lift
/// the fence outright: batch 3 was written behind a gap and answered
/// OUT_OF_ORDER_SEQUENCE_NUMBER, on which librdkafka bumps its epoch and renumbers batches
/// another leader may have committed, which are then stored twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_through_another_leader_does_not_let_a_held_batch_be_skipped() {
    let (cluster, group) = three_nodes_with_one_record().await;
    let (old, new) = (cluster.node(1), cluster.node(2));
    let idempotent = |seq| make_batch(1, 7, seq, b"idempotent").to_vec();
    let appended = |base_offset| Ok(Applied::Partition(AppendOutcome::Appended { base_offset }));

    assert_eq!(
        propose(&old.handle, group, idempotent(0)).await,
        appended(1)
    );
    for seq in [1, 2] {
        let refused = propose(&new.handle, group, idempotent(seq)).await;
        assert_not_leader(&refused, &format!("batch {seq} at a follower"));
    }
    assert_eq!(
        propose(&old.handle, group, idempotent(1)).await,
        appended(2)
    );
    wait_for("node 2 to apply batch 1", || {
        (cluster.high_watermark(2, "t") == 3).then_some(())
    })
    .await;

    // Node 3 falls behind, so that the transfer goes to node 2.
    cluster.net.cut_off(3);
    produce(&old.handle, group).await;
    assert!(old.handle.transfer_leadership(vec![]).await > 0);
    wait_for("node 2 to lead", || {
        let p = new.catalog.partition("t", 0)?;
        (p.leader() == Some(2) && p.high_watermark() == 4).then_some(())
    })
    .await;
    cluster.net.heal(3);

    let skipped = propose(&new.handle, group, idempotent(3)).await;
    assert_not_leader(&skipped, "the batch after a held one");
    assert_eq!(
        propose(&new.handle, group, idempotent(2)).await,
        appended(4)
    );
    assert_eq!(
        propose(&new.handle, group, idempotent(3)).await,
        appended(5)
    );
    cluster.assert_drivers_alive();
    cluster.stop();
}

/// A replica added after retention compacted its leader's log cannot catch up from the
/// log: it gets a snapshot, and then holds the same log start, high watermark, batches
/// and producer state as its leader. (Before snapshots existed, the move never finished.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_after_compaction_catches_up_from_a_snapshot() {
    let cluster = Cluster::start(&[1, 2, 3]);
    let configs = [("retention.bytes".to_string(), "2000".to_string())].into();
    cluster.topic_with("t", &[1, 2], configs).await;
    let group = cluster.group("t");
    for seq in 0..40 {
        let batch = make_batch(1, 9, seq, &[b'r'; 200]).to_vec();
        propose(&cluster.node(1).handle, group, batch)
            .await
            .unwrap();
    }
    let leader = cluster.node(1).catalog.partition("t", 0).unwrap();
    wait_for("retention on the leader", || {
        (leader.log_start() > 0).then_some(())
    })
    .await;

    let command = Command::SetTargets {
        targets: vec![(group, vec![1, 2, 3])],
    };
    let meta = cluster.metadata_leader().await;
    cluster
        .node(meta)
        .handle
        .propose_metadata(&command, Duration::from_secs(10))
        .await
        .unwrap();
    let third = wait_for("node 3 hosting the partition", || {
        cluster.node(3).catalog.partition("t", 0)
    })
    .await;
    // (Each replica applies retention on its own, so their log starts meet once both
    // passes ran over the same batches.)
    wait_for("node 3 caught up, with the leader's log start", || {
        let (voters, _) = leader.replicas();
        (voters.contains(&3)
            && third.high_watermark() == 40
            && third.log_start() == leader.log_start())
        .then_some(())
    })
    .await;
    assert!(metrics::RAFT_SNAPSHOTS_INSTALLED.get() > 0);
    let db3 = cluster.net.dbs.lock().unwrap()[&3].clone();
    let db1 = cluster.net.dbs.lock().unwrap()[&1].clone();
    assert_eq!(
        log::read::read(&db3, &third, third.log_start(), 1 << 20).unwrap(),
        log::read::read(&db1, &leader, leader.log_start(), 1 << 20).unwrap()
    );

    // Node 3 takes over (node 2, cut off, falls out of sync and is passed over) and knows
    // producer 9 from the snapshot: a retry is a duplicate, the next batch fits.
    cluster.net.cut_off(2);
    wait_for("node 2 out of sync", || {
        (!leader.replicas().1.contains(&2)).then_some(())
    })
    .await;
    cluster.node(1).handle.transfer_leadership(vec![]).await;
    wait_for("node 3 leading", || {
        (third.leader() == Some(3)).then_some(())
    })
    .await;
    cluster.net.heal(2);
    let h = &cluster.node(3).handle;
    let retry = propose(h, group, make_batch(1, 9, 39, &[b'r'; 200]).to_vec()).await;
    assert_eq!(
        retry,
        Ok(Applied::Partition(AppendOutcome::Duplicate {
            base_offset: 39
        }))
    );
    let next = propose(h, group, make_batch(1, 9, 40, b"next").to_vec()).await;
    assert_eq!(
        next,
        Ok(Applied::Partition(AppendOutcome::Appended {
            base_offset: 40
        }))
    );
    cluster.wait_high_watermarks("t", 41).await;
    cluster.assert_drivers_alive();
    cluster.stop();
}
