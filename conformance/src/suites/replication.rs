//! Replication under faults: clusters of real `strata serve --cluster` processes on
//! loopback, each over its own store, with a fault-injecting TCP proxy on every Raft link.
//!
//! Every case runs two workloads at once through the nodes' KV Connect servers while a fault
//! schedule runs: register clients (gets, sets, deletes, compare-and-sets on a few keys,
//! recorded and judged by the linearizability checker), and bank transfers (two balances
//! read, both written under versionstamp checks) with an auditor that reads every account in
//! one snapshot — alternately through a node's strong and eventual endpoints — and must
//! always find the same total. Faults:
//!
//! * the leader SIGKILLed under load, then restarted on its own data;
//! * a follower cut off from the others (a minority partition), then healed;
//! * of five nodes, the leader and one other cut off from the three (the leader in the
//!   minority, the majority electing a new one), then healed;
//! * the leader paused (SIGSTOP) past the election timeout, then resumed;
//! * every link slowed by 30 ms each way, then restored;
//! * a new node joining under load, through a snapshot (the log behind it compacted);
//! * a rolling restart of every node;
//! * with every node in a network namespace of its own (where the machine allows them: root
//!   and `ip netns`), the leader cut off from the others at the IP layer, then a follower's
//!   cable pulled (its link to the bridge down, so packets vanish without a word);
//! * with every node's data on a small file system of its own (a `tmpfs`, where the machine
//!   allows mounting one), a follower's disk filled to the last byte: the node must say so
//!   and stop taking part rather than run on a log it cannot write, the others carry on, and
//!   once there is room again it restarts on the same data and catches up.
//!
//! Pass means: no acknowledged write lost and no anomaly (the history is linearizable, the
//! bank's total never changes), and once the fault is healed every node serves a strong
//! read and a write again within [`RECOVERY`].
//!
//! The proxies: node *i* reaches node *j* at the proxy for the link *i → j*
//! (`--raft-peer-via`), which forwards to *j*. Cutting a link closes its open connections
//! and refuses new ones, so a partition is a set of cut links. In the namespace case there
//! are no proxies: nodes reach each other over a bridge, a partition is a pair of blackhole
//! routes per link, and the runner reaches every node over one more veth into the bridge.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use strata_kv_connect::proto;
use strata_replication::network::{admin, AdminReply, AdminRequest, Credentials};
use strata_replication::ClusterStatus;

use super::clients::{deno_program, run_tests, strata_bin, TOKEN};
use super::linearizability::kv_connect::HttpKv;
use super::linearizability::workload::{
    judge, run_clients, KvClient, Read, Rng, Tally, Workload, WriteError,
};
use crate::linearizability::Recorder;
use crate::{cases, ensure, BackendKind, CaseResult, Harness, Suite};

pub fn suite() -> Suite {
    Suite {
        name: "replication",
        needs_persistence: true,
        needs_multi_writer: false,
        external: true,
        cases: cases![
            leader_killed_under_load,
            minority_partition,
            leader_in_a_minority_of_five,
            paused_leader,
            slow_links,
            node_joins_through_a_snapshot,
            rolling_restart,
            partitions_in_network_namespaces,
            follower_disk_fills,
            deno_client_on_a_cluster,
        ],
    }
}

const SECRET: &str = "replication-suite-cluster-secret";
const CLUSTER: &str = "conformance";
/// How long a healed cluster may take to serve reads and writes on every node again.
const RECOVERY: Duration = Duration::from_secs(20);
/// Register operations per client.
const OPS: usize = 150;

fn credentials() -> Credentials {
    Credentials {
        cluster_id: CLUSTER.into(),
        secret: SECRET.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Links: a TCP proxy per directed Raft link.

struct LinkState {
    upstream: Mutex<Option<String>>,
    cut: AtomicBool,
    /// Bumped on every cut: connections opened before it close.
    generation: watch::Sender<u64>,
    /// Milliseconds each chunk waits before it is passed on, either way.
    delay_ms: AtomicU64,
}

#[derive(Clone)]
struct Link {
    addr: String,
    state: Arc<LinkState>,
}

impl Link {
    async fn start() -> Result<Link, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind a link proxy: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let state = Arc::new(LinkState {
            upstream: Mutex::new(None),
            cut: AtomicBool::new(false),
            generation: watch::channel(0).0,
            delay_ms: AtomicU64::new(0),
        });
        let link = Link { addr, state };
        let serving = link.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let link = serving.clone();
                tokio::spawn(async move { link.relay(conn).await });
            }
        });
        Ok(link)
    }

    fn set_upstream(&self, addr: &str) {
        *self
            .state
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(addr.to_string());
    }

    fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.generation.send_modify(|g| *g += 1);
    }

    fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    async fn relay(&self, conn: TcpStream) {
        let upstream = self
            .state
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (Some(upstream), false) = (upstream, self.state.cut.load(Ordering::SeqCst)) else {
            return;
        };
        let mut generation = self.state.generation.subscribe();
        let born = *generation.borrow_and_update();
        let Ok(up) = TcpStream::connect(&upstream).await else {
            return;
        };
        let _ = conn.set_nodelay(true);
        let _ = up.set_nodelay(true);
        let (from_client, to_client) = conn.into_split();
        let (from_server, to_server) = up.into_split();
        tokio::select! {
            _ = self.pump(from_client, to_server) => {}
            _ = self.pump(from_server, to_client) => {}
            _ = generation.wait_for(|g| *g != born) => {}
        }
    }

    /// Copy one direction, holding each chunk for the link's delay.
    async fn pump(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = self.state.delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn delay(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// Network namespaces: a node in each, joined by a bridge in one more.

/// Network namespaces for `n` nodes: node *i* in `{prefix}-n{i}` with address `{subnet}.{i}`
/// on its `eth0`, whose other end is a port of the bridge in `{prefix}-hub`; the runner
/// reaches the bridge through the veth `{prefix}r` (`{subnet}.254`). Removed when dropped.
struct Netns {
    prefix: String,
    subnet: String,
    n: u64,
}

/// Run `ip` (or `ip netns exec NS tc …`); its error output on failure.
async fn ip(args: &[&str]) -> CaseResult {
    let out = Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("ip: {e}"))?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Why the namespaces are not there: not allowed on this machine (the case is skipped), or
/// a failure where they are (the case fails).
enum NetnsError {
    NotAllowed(String),
    Failed(String),
}

impl Netns {
    async fn create(n: u64) -> Result<Netns, NetnsError> {
        let pid = std::process::id();
        // Interface names hold at most 15 bytes: `st` + 5 digits + a suffix of 3.
        let net = Netns {
            prefix: format!("st{}", pid % 100_000),
            subnet: format!("10.213.{}", pid % 250),
            n,
        };
        // The first namespace tells whether this machine allows them at all; after it, a
        // failure is one. On failure, dropping `net` removes what was made.
        net.remove();
        ip(&["netns", "add", &net.hub()])
            .await
            .map_err(NetnsError::NotAllowed)?;
        net.build().await.map_err(NetnsError::Failed)?;
        Ok(net)
    }

    async fn build(&self) -> CaseResult {
        let (p, hub) = (&self.prefix, self.hub());
        ip(&["-n", &hub, "link", "set", "lo", "up"]).await?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]).await?;
        ip(&["-n", &hub, "link", "set", "br0", "up"]).await?;
        let (root, up) = (format!("{p}r"), format!("{p}u"));
        ip(&["link", "add", &root, "type", "veth", "peer", "name", &up]).await?;
        self.plug_into_bridge(&up).await?;
        let me = format!("{}.254/24", self.subnet);
        ip(&["addr", "add", &me, "dev", &root]).await?;
        ip(&["link", "set", &root, "up"]).await?;
        for i in 1..=self.n {
            let ns = self.ns(i);
            ip(&["netns", "add", &ns]).await?;
            ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
            let (port, eth) = (self.port(i), format!("{p}e{i}"));
            ip(&["link", "add", &port, "type", "veth", "peer", "name", &eth]).await?;
            self.plug_into_bridge(&port).await?;
            ip(&["link", "set", &eth, "netns", &ns]).await?;
            ip(&["-n", &ns, "link", "set", &eth, "name", "eth0"]).await?;
            let addr = format!("{}/24", self.addr(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]).await?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"]).await?;
        }
        Ok(())
    }

    /// Move a veth end into the hub and make it a port of the bridge.
    async fn plug_into_bridge(&self, dev: &str) -> CaseResult {
        let hub = self.hub();
        ip(&["link", "set", dev, "netns", &hub]).await?;
        ip(&["-n", &hub, "link", "set", dev, "master", "br0"]).await?;
        ip(&["-n", &hub, "link", "set", dev, "up"]).await
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    fn ns(&self, i: u64) -> String {
        format!("{}-n{i}", self.prefix)
    }

    /// Node `i`'s port on the bridge.
    fn port(&self, i: u64) -> String {
        format!("{}p{i}", self.prefix)
    }

    fn addr(&self, i: u64) -> String {
        format!("{}.{i}", self.subnet)
    }

    /// Drop every packet between the groups, both ways: a blackhole route in each node's
    /// namespace for each node of the other group. Each node still reaches the runner.
    async fn partition(&self, a: &[u64], b: &[u64]) -> CaseResult {
        let mut pairs = Vec::new();
        for x in a {
            for y in b {
                pairs.extend([(*x, *y), (*y, *x)]);
            }
        }
        for (from, to) in pairs {
            let dst = format!("{}/32", self.addr(to));
            ip(&["-n", &self.ns(from), "route", "add", "blackhole", &dst]).await?;
        }
        Ok(())
    }

    async fn heal(&self) -> CaseResult {
        for i in 1..=self.n {
            ip(&["-n", &self.ns(i), "route", "flush", "type", "blackhole"]).await?;
        }
        Ok(())
    }

    /// Take node `i`'s bridge port down (its packets vanish, nothing is refused), or up.
    async fn unplug(&self, i: u64, pulled: bool) -> CaseResult {
        let state = if pulled { "down" } else { "up" };
        ip(&["-n", &self.hub(), "link", "set", &self.port(i), state]).await
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.remove();
    }
}

impl Netns {
    /// Delete the namespaces (and what a run that died left under the same names).
    fn remove(&self) {
        // Deleting a namespace deletes the veths in it, and with them their other ends.
        for ns in (1..=self.n).map(|i| self.ns(i)).chain([self.hub()]) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &format!("{}r", self.prefix)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// Small disks: a node's data on a file system that can fill up.

/// A `tmpfs` of [`SmallDisk::BYTES`] mounted for one node's data, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Room for the cluster's data in these cases many times over, and little enough that
    /// filling it is quick.
    const BYTES: u64 = 64 << 20;

    /// Mount one at `path` (created if missing). Failing means the machine does not allow
    /// it here (not root, or no mounts in this container).
    async fn mount(path: PathBuf) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={},mode=0700", Self::BYTES))
            .arg("strata-small-disk")
            .arg(&path)
            .output()
            .await
            .map_err(|e| format!("mount: {e}"))?;
        ensure!(
            out.status.success(),
            "mount -t tmpfs {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(SmallDisk { path })
    }

    /// Fill the disk with a file of its own, and return that file. (The write that meets the
    /// end is cut short at the last free page, so no byte is left.)
    fn fill(&self) -> Result<PathBuf, String> {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).map_err(|e| e.to_string())?;
        let chunk = vec![0xa5u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => {
                    return Err("the disk took no more bytes, yet did not say it is full".into())
                }
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(format!("filling {}: {e}", filler.display())),
            }
        }
        Ok(filler)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a node still holding a file on it does not keep the mount alive.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// Nodes: `strata serve --cluster` processes.

struct NodeProc {
    id: u64,
    dir: PathBuf,
    raft: String,
    kv: String,
    child: Option<Child>,
}

struct Cluster {
    bin: PathBuf,
    root: PathBuf,
    nodes: Vec<NodeProc>,
    /// (from, to) → the proxy `from` dials `to` through.
    links: BTreeMap<(u64, u64), Link>,
    /// Instead of proxies: every node in a network namespace of its own.
    net: Option<Arc<Netns>>,
    /// Nodes whose data is on a small disk of its own.
    disks: BTreeMap<u64, SmallDisk>,
    snapshot_every: u64,
}

impl Cluster {
    /// Start `n` nodes and form a cluster of them.
    async fn start(
        h: &Harness,
        n: u64,
        snapshot_every: u64,
        net: Option<Arc<Netns>>,
        disks: BTreeMap<u64, SmallDisk>,
    ) -> Result<Cluster, String> {
        let mut cluster = Cluster {
            bin: strata_bin()?,
            root: h.dir().join("cluster"),
            nodes: Vec::new(),
            links: BTreeMap::new(),
            net,
            disks,
            snapshot_every,
        };
        if cluster.net.is_none() {
            for id in 1..=n {
                cluster.add_links(id, n).await?;
            }
        }
        for id in 1..=n {
            let raft = match &cluster.net {
                Some(net) => format!("{}:7001", net.addr(id)),
                None => "127.0.0.1:0".to_string(),
            };
            let node = cluster.spawn(h.kind, id, &raft, 0).await?;
            cluster.nodes.push(node);
        }
        let mut members = BTreeMap::new();
        for node in &cluster.nodes {
            match admin(
                &node.raft,
                &credentials(),
                &AdminRequest::Describe,
                RECOVERY,
            )
            .await
            {
                Ok(AdminReply::Member { id, member }) => {
                    members.insert(id, member);
                }
                other => return Err(format!("describe node {}: {other:?}", node.id)),
            }
        }
        admin(
            &cluster.nodes[0].raft,
            &credentials(),
            &AdminRequest::Initialize { members },
            RECOVERY,
        )
        .await
        .map_err(|e| format!("initialize: {e}"))?;
        cluster.leader().await?;
        Ok(cluster)
    }

    /// Proxies for every link between node `id` and nodes `1..=n`.
    async fn add_links(&mut self, id: u64, n: u64) -> Result<(), String> {
        for other in 1..=n {
            if other == id {
                continue;
            }
            for pair in [(id, other), (other, id)] {
                if !self.links.contains_key(&pair) {
                    let link = Link::start().await?;
                    if let Some(to) = self.nodes.iter().find(|p| p.id == pair.1) {
                        link.set_upstream(&to.raft);
                    }
                    self.links.insert(pair, link);
                }
            }
        }
        Ok(())
    }

    /// Start node `id` on `raft`, with its KV Connect server on `kv_port` (0: any).
    async fn spawn(
        &self,
        kind: BackendKind,
        id: u64,
        raft: &str,
        kv_port: u16,
    ) -> Result<NodeProc, String> {
        let dir = self.root.join(format!("node{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // The node's log file stays beside its disk, so that it can say the disk is full.
        let data = self.disks.get(&id).map_or(dir.clone(), |d| d.path.clone());
        let store = match kind {
            BackendKind::Sqlite => format!("sqlite:{}", data.join("data").display()),
            _ => format!("redb:{}", data.join("data").display()),
        };
        // In a namespace: `ip netns exec` enters it and then runs the node in its own place
        // (same process), so signals reach the node itself.
        let (mut cmd, host) = match &self.net {
            Some(net) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &net.ns(id)]).arg(&self.bin);
                (cmd, net.addr(id))
            }
            None => (Command::new(&self.bin), "127.0.0.1".to_string()),
        };
        let kv_addr = format!("{host}:{kv_port}");
        cmd.env_remove("STRATA_ACCESS_TOKEN")
            .env_remove("DENO_KV_ACCESS_TOKEN")
            .env("STRATA_CLUSTER_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .args(["--store", &store, "serve", "--access-token", TOKEN])
            .args(["--kv-connect", &kv_addr, "--no-pgwire", "--no-rest"])
            .args(["--cluster", "--node-id", &id.to_string(), "--raft", raft])
            .args(["--cluster-id", CLUSTER])
            .args(["--raft-snapshot-every", &self.snapshot_every.to_string()])
            // A fifth of the entries between snapshots stay behind each one, so that the
            // first snapshot compacts the log (with the default 1,000 kept, that took more
            // entries than a workload writes when the groups are large).
            .args([
                "--raft-keep-after-snapshot",
                &(self.snapshot_every / 5).to_string(),
            ])
            // Not the default (1): the faults also meet a leader with several commit
            // groups in its log at once, and what follows when one of them fails.
            .args(["--raft-groups-in-flight", "3"]);
        for ((from, to), link) in &self.links {
            if *from == id {
                cmd.arg("--raft-peer-via")
                    .arg(format!("{to}={}", link.addr));
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .map_err(|e| e.to_string())?;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start node {id}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut kv, mut raft_addr) = (String::new(), String::new());
        while raft_addr.is_empty() {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some(a) = line.strip_prefix("Listening on ") {
                        kv = a.trim().to_string();
                    } else if let Some(a) = line.strip_prefix("Raft on ") {
                        raft_addr = a.trim().to_string();
                    }
                }
                _ => {
                    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
                    return Err(format!("node {id} did not start: {log}"));
                }
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        for ((_, to), link) in &self.links {
            if *to == id {
                link.set_upstream(&raft_addr);
            }
        }
        Ok(NodeProc {
            id,
            dir,
            raft: raft_addr,
            kv,
            child: Some(child),
        })
    }

    fn node(&self, id: u64) -> &NodeProc {
        &self.nodes[self.nodes.iter().position(|n| n.id == id).unwrap_or(0)]
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        let at = self.nodes.iter().position(|n| n.id == id).unwrap_or(0);
        &mut self.nodes[at]
    }

    async fn status(&self, via: u64) -> Result<ClusterStatus, String> {
        match admin(
            &self.node(via).raft,
            &credentials(),
            &AdminRequest::Status,
            Duration::from_secs(2),
        )
        .await
        {
            Ok(AdminReply::Status(s)) => Ok(s),
            other => Err(format!("status of node {via}: {other:?}")),
        }
    }

    /// The leader most running nodes agree on, waiting for an election if need be.
    async fn leader(&self) -> Result<u64, String> {
        let deadline = Instant::now() + RECOVERY;
        loop {
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                if let Ok(s) = self.status(n.id).await {
                    if s.leader == Some(s.node) {
                        return Ok(s.node);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no leader within {RECOVERY:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill(&mut self, id: u64) -> Result<(), String> {
        if let Some(mut child) = self.node_mut(id).child.take() {
            child
                .kill()
                .await
                .map_err(|e| format!("kill node {id}: {e}"))?;
        }
        Ok(())
    }

    /// Stop a node gracefully (SIGTERM) and wait for it to exit.
    async fn stop(&mut self, id: u64) -> Result<(), String> {
        if let Some(mut child) = self.node_mut(id).child.take() {
            if let Some(pid) = child.id() {
                signal("TERM", pid).await?;
            }
            tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .map_err(|_| format!("node {id} did not stop within 30 s"))?
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Start a stopped node again on its own data and addresses, so its clients find it.
    async fn restart(&mut self, kind: BackendKind, id: u64) -> Result<(), String> {
        let raft = self.node(id).raft.clone();
        let kv_port = self
            .node(id)
            .kv
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let node = self.spawn(kind, id, &raft, kv_port).await?;
        *self.node_mut(id) = node;
        Ok(())
    }

    async fn pause(&self, id: u64, stop: bool) -> Result<(), String> {
        let pid = self
            .node(id)
            .child
            .as_ref()
            .and_then(|c| c.id())
            .ok_or("the node is not running")?;
        signal(if stop { "STOP" } else { "CONT" }, pid).await
    }

    /// Cut every link between the two groups, both ways.
    async fn partition(&self, a: &[u64], b: &[u64]) -> CaseResult {
        if let Some(net) = &self.net {
            return net.partition(a, b).await;
        }
        for ((from, to), link) in &self.links {
            if (a.contains(from) && b.contains(to)) || (b.contains(from) && a.contains(to)) {
                link.cut();
            }
        }
        Ok(())
    }

    async fn heal(&self) -> CaseResult {
        if let Some(net) = &self.net {
            return net.heal().await;
        }
        for link in self.links.values() {
            link.heal();
            link.delay(0);
        }
        Ok(())
    }

    /// Pull node `id`'s cable (or plug it back in): namespaces only.
    async fn unplug(&self, id: u64, pulled: bool) -> CaseResult {
        match &self.net {
            Some(net) => net.unplug(id, pulled).await,
            None => Err("pulling a cable needs the nodes in network namespaces".into()),
        }
    }

    /// Hold every chunk on every link for `ms` (a slow network).
    fn slow(&self, ms: u64) {
        for link in self.links.values() {
            link.delay(ms);
        }
    }

    /// Every running node serves a strong read and a write within [`RECOVERY`].
    async fn serving(&self) -> Result<Duration, String> {
        let start = Instant::now();
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                let attempt = async {
                    let kv = HttpKv::connect(&n.kv).await?;
                    kv.write(b"probe", Some(n.id.to_be_bytes().to_vec()), None)
                        .await
                        .map_err(|e| match e {
                            WriteError::NotApplied(e) | WriteError::Unknown(e) => e,
                        })?;
                    kv.get(b"probe").await.map(|_| ())
                };
                match attempt.await {
                    Ok(()) => break,
                    Err(e) if start.elapsed() > RECOVERY => {
                        return Err(format!(
                            "node {} does not serve {RECOVERY:?} after the fault healed: {e}",
                            n.id
                        ))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(start.elapsed())
    }

    async fn shutdown(mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                if let Some(pid) = c.id() {
                    let _ = signal("CONT", pid).await;
                }
                let _ = c.kill().await;
            }
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- node {} (last lines)\n{}",
                    n.id,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn signal(name: &str, pid: u32) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .await
        .map_err(|e| format!("kill -{name}: {e}"))?;
    ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Clients: each fails over to the next node when its node does not answer.

struct Failover {
    nodes: Vec<HttpKv>,
    at: AtomicUsize,
    calls: Arc<AtomicU64>,
}

impl Failover {
    fn current(&self) -> &HttpKv {
        &self.nodes[self.at.load(Ordering::Relaxed) % self.nodes.len()]
    }

    fn next(&self) {
        self.at.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether an error means the node did not answer (the next call goes to another node).
fn unreachable(e: &str) -> bool {
    e.starts_with("request:") || e.contains("HTTP 5") || e.contains("HTTP 409")
}

#[async_trait::async_trait]
impl KvClient for Failover {
    async fn get(&self, key: &[u8]) -> Result<Option<Read>, String> {
        self.count();
        let r = self.current().get(key).await;
        if matches!(&r, Err(e) if unreachable(e)) {
            self.next();
        }
        r
    }

    async fn read_keys(
        &self,
        keys: &[Vec<u8>],
        snapshot: bool,
    ) -> Result<Vec<Option<Read>>, String> {
        self.count();
        let r = self.current().read_keys(keys, snapshot).await;
        if matches!(&r, Err(e) if unreachable(e)) {
            self.next();
        }
        r
    }

    async fn write(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        check: Option<Option<Vec<u8>>>,
    ) -> Result<bool, WriteError> {
        self.count();
        let r = self.current().write(key, value, check).await;
        if matches!(&r, Err(WriteError::Unknown(e) | WriteError::NotApplied(e)) if unreachable(e)) {
            self.next();
        }
        r
    }
}

// ---------------------------------------------------------------------------------------
// The bank over KV Connect.

const ACCOUNTS: u64 = 5;
const OPENING: u64 = 100;

fn account(i: u64) -> Vec<u8> {
    format!("bank/{i}").into_bytes()
}

fn balance(r: &Option<Read>) -> Result<u64, String> {
    match r {
        None => Ok(0),
        Some(r) => Ok(u64::from_le_bytes(
            r.value
                .as_slice()
                .try_into()
                .map_err(|_| "a balance is not 8 bytes".to_string())?,
        )),
    }
}

fn set(key: Vec<u8>, n: u64) -> proto::Mutation {
    proto::Mutation {
        key,
        value: Some(proto::KvValue {
            data: n.to_le_bytes().to_vec(),
            encoding: proto::ValueEncoding::VeBytes as i32,
        }),
        mutation_type: proto::MutationType::MSet as i32,
        ..Default::default()
    }
}

fn check(key: Vec<u8>, read: &Option<Read>) -> proto::Check {
    proto::Check {
        key,
        versionstamp: read.as_ref().map(|r| r.version.clone()).unwrap_or_default(),
    }
}

/// Transfers until `stop`; how many committed.
async fn transfers(kv: Vec<HttpKv>, seed: u64, stop: Arc<AtomicBool>) -> u64 {
    let mut rng = Rng::new(seed);
    let mut at = 0usize;
    let mut committed = 0;
    while !stop.load(Ordering::Relaxed) {
        let node = &kv[at % kv.len()];
        let from = rng.below(ACCOUNTS);
        let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
        let reads = match node.snapshot_read(&[account(from), account(to)]).await {
            Ok(r) => r,
            Err(_) => {
                at += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (Ok(a), Ok(b)) = (balance(&reads[0]), balance(&reads[1])) else {
            continue;
        };
        let amount = (1 + rng.below(20)).min(a);
        let w = node
            .atomic_write(
                vec![
                    check(account(from), &reads[0]),
                    check(account(to), &reads[1]),
                ],
                vec![set(account(from), a - amount), set(account(to), b + amount)],
            )
            .await;
        match w {
            Ok(true) => committed += 1,
            Ok(false) => {}
            Err(_) => {
                at += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    committed
}

/// Read every account in one snapshot until `stop`, alternating strong and eventual reads
/// over the nodes; the number of audits, or the first one whose total is wrong.
async fn audits(
    strong: Vec<HttpKv>,
    eventual: Vec<HttpKv>,
    stop: Arc<AtomicBool>,
) -> Result<u64, String> {
    let keys: Vec<Vec<u8>> = (0..ACCOUNTS).map(account).collect();
    let mut n = 0u64;
    let mut audited = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let pool = if n.is_multiple_of(2) {
            &strong
        } else {
            &eventual
        };
        let kv = &pool[(n / 2) as usize % pool.len()];
        if let Ok(reads) = kv.snapshot_read(&keys).await {
            let mut total = 0;
            for r in &reads {
                total += balance(r)?;
            }
            ensure!(
                total == ACCOUNTS * OPENING,
                "an audit ({}) found {total} in the bank, not {}",
                if n.is_multiple_of(2) {
                    "strong"
                } else {
                    "eventual"
                },
                ACCOUNTS * OPENING
            );
            audited += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(audited)
}

// ---------------------------------------------------------------------------------------
// One case: workloads, a fault schedule, then the verdicts.

/// What a fault schedule can wait on: the number of client calls made so far.
#[derive(Clone)]
struct Progress(Arc<AtomicU64>);

impl Progress {
    /// Wait until `more` calls have been made since now, or `at_most` has passed.
    async fn advance(&self, more: u64, at_most: Duration) {
        let target = self.0.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + at_most;
        while self.0.load(Ordering::Relaxed) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Run the workloads on a new cluster while `fault` happens to it, then judge.
async fn run_case(h: &Harness, fault: Fault) -> CaseResult {
    let what = fault.describe();
    match h.kind {
        BackendKind::Redb => {}
        BackendKind::Dynamodb => {
            return Err(
                "SKIP: DynamoDB is shared already; nodes keep their copies in a local store".into(),
            )
        }
        // The faults are the subject, not the node store: one store runs them (CI time).
        _ => return Err("SKIP: the replication faults run on redb node stores".into()),
    }
    let (nodes, snapshot_every) = fault.cluster();
    let net = match fault {
        Fault::Namespaces => match Netns::create(nodes).await {
            Ok(net) => Some(Arc::new(net)),
            Err(NetnsError::NotAllowed(e)) => {
                return Err(format!(
                    "SKIP: this machine does not allow network namespaces here ({e})"
                ))
            }
            Err(NetnsError::Failed(e)) => {
                return Err(format!("setting up the network namespaces: {e}"))
            }
        },
        _ => None,
    };
    let mut disks = BTreeMap::new();
    if let Fault::DiskFull = fault {
        for id in 1..=nodes {
            let path = h
                .dir()
                .join("cluster")
                .join(format!("node{id}"))
                .join("disk");
            match SmallDisk::mount(path).await {
                Ok(disk) => disks.insert(id, disk),
                Err(e) if disks.is_empty() => {
                    return Err(format!(
                        "SKIP: this machine does not allow mounting a small file system here ({e})"
                    ))
                }
                Err(e) => return Err(e),
            };
        }
    }
    let mut cluster = Cluster::start(h, nodes, snapshot_every, net, disks).await?;
    // Open the accounts, through the leader's node.
    let leader = cluster.leader().await?;
    let first = HttpKv::connect(&cluster.node(leader).kv).await?;
    let opened = first
        .atomic_write(
            Vec::new(),
            (0..ACCOUNTS).map(|i| set(account(i), OPENING)).collect(),
        )
        .await;
    ensure!(matches!(opened, Ok(true)), "opening the accounts failed");

    let calls = Arc::new(AtomicU64::new(0));
    let mut clients: Vec<(Arc<dyn KvClient>, u64)> = Vec::new();
    for c in 0..6u64 {
        let mut nodes = Vec::new();
        for i in 0..cluster.nodes.len() {
            let n = &cluster.nodes[(c as usize + i) % cluster.nodes.len()];
            nodes.push(HttpKv::connect(&n.kv).await?);
        }
        clients.push((
            Arc::new(Failover {
                nodes,
                at: AtomicUsize::new(0),
                calls: calls.clone(),
            }),
            c,
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut bank = Vec::new();
    for seed in 0..2u64 {
        let mut kv = Vec::new();
        for n in &cluster.nodes {
            kv.push(HttpKv::connect(&n.kv).await?);
        }
        bank.push(tokio::spawn(transfers(kv, 77 + seed, stop.clone())));
    }
    let (mut strong, mut eventual) = (Vec::new(), Vec::new());
    for n in &cluster.nodes {
        strong.push(HttpKv::connect(&n.kv).await?);
        eventual.push(HttpKv::connect(&n.kv).await?.eventual());
    }
    let auditor = tokio::spawn(audits(strong, eventual, stop.clone()));

    let rec = Recorder::monotonic();
    let workload = Workload::new(OPS);
    let progress = Progress(calls.clone());
    let registers = run_clients(clients, &rec, &workload);
    let schedule = fault.run(&mut cluster, h.kind, &progress);
    let (tally, fault_result) = tokio::join!(registers, schedule);
    stop.store(true, Ordering::Relaxed);
    let mut transferred = 0;
    for b in bank {
        transferred += b.await.map_err(|e| e.to_string())?;
    }
    let audited = auditor.await.map_err(|e| e.to_string())?;
    let verdict = async {
        fault_result?;
        let recovered = cluster.serving().await?;
        let tally: Tally = tally?;
        let audited = audited?;
        ensure!(tally.ok > 0 && audited > 0 && transferred > 0, "nothing got through: {tally:?}");
        let history = rec.history();
        judge(what, &history, &rec.dropped(), &tally)?;
        eprintln!(
            "  {what}: 1 history, {} operations checked; {transferred} transfers, {audited} audits (strong and eventual) found the total intact; every node served again {:.1?} after the fault healed",
            history.len(),
            recovered
        );
        Ok::<(), String>(())
    }
    .await;
    let logs = cluster.logs();
    cluster.shutdown().await;
    verdict.map_err(|e| format!("{e}\n{logs}"))
}

/// The fault schedules, each run while the workloads are.
#[derive(Clone, Copy)]
enum Fault {
    KillLeader,
    IsolateFollower,
    LeaderInMinorityOfFive,
    PauseLeader,
    SlowLinks,
    JoinThroughSnapshot,
    RollingRestart,
    Namespaces,
    DiskFull,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::KillLeader => "leader SIGKILLed and restarted",
            Fault::IsolateFollower => "a follower partitioned away",
            Fault::LeaderInMinorityOfFive => "of five, the leader and one other cut off",
            Fault::PauseLeader => "leader paused past the election timeout",
            Fault::SlowLinks => "every link delayed 30 ms",
            Fault::JoinThroughSnapshot => "a node joining through a snapshot",
            Fault::RollingRestart => "rolling restart of every node",
            Fault::Namespaces => "in network namespaces: the leader cut off, a cable pulled",
            Fault::DiskFull => "a follower's disk full, then room again",
        }
    }

    /// Nodes, and log entries between snapshots.
    fn cluster(self) -> (u64, u64) {
        match self {
            Fault::LeaderInMinorityOfFive => (5, 10_000),
            // Snapshots often, so that the log a new node would need is soon compacted.
            Fault::JoinThroughSnapshot => (3, 50),
            _ => (3, 10_000),
        }
    }

    /// Wait for the workloads to get going, do the damage, let them run through it, heal.
    async fn run(self, c: &mut Cluster, kind: BackendKind, p: &Progress) -> CaseResult {
        let (some, a_while) = (Duration::from_secs(20), Duration::from_secs(20));
        match self {
            Fault::KillLeader => {
                p.advance(150, some).await;
                let leader = c.leader().await?;
                c.kill(leader).await?;
                p.advance(150, a_while).await;
                c.restart(kind, leader).await
            }
            Fault::IsolateFollower => {
                p.advance(150, some).await;
                let follower = c.leader().await? % 3 + 1;
                let rest: Vec<u64> = (1..=3).filter(|n| *n != follower).collect();
                c.partition(&[follower], &rest).await?;
                p.advance(200, a_while).await;
                c.heal().await
            }
            Fault::LeaderInMinorityOfFive => {
                p.advance(150, some).await;
                let leader = c.leader().await?;
                let buddy = leader % 5 + 1;
                let majority: Vec<u64> = (1..=5).filter(|n| *n != leader && *n != buddy).collect();
                c.partition(&[leader, buddy], &majority).await?;
                p.advance(200, a_while).await;
                c.heal().await
            }
            Fault::PauseLeader => {
                p.advance(150, some).await;
                let leader = c.leader().await?;
                c.pause(leader, true).await?;
                // Past the election timeout (at most 800 ms), whatever the clients do.
                tokio::time::sleep(Duration::from_millis(2_000)).await;
                p.advance(100, Duration::from_secs(10)).await;
                c.pause(leader, false).await
            }
            Fault::SlowLinks => {
                p.advance(100, some).await;
                c.slow(30);
                p.advance(200, Duration::from_secs(30)).await;
                c.heal().await
            }
            Fault::JoinThroughSnapshot => {
                // Enough writes that a snapshot was taken and the log behind it purged.
                p.advance(300, Duration::from_secs(30)).await;
                c.until(
                    "the leader compacted its log",
                    |s| s.purged_index.is_some(),
                    None,
                )
                .await?;
                c.join(kind, 4).await?;
                c.until(
                    "the new node installed a snapshot",
                    |s| s.snapshot_index.is_some(),
                    Some(4),
                )
                .await?;
                p.advance(100, Duration::from_secs(10)).await;
                Ok(())
            }
            Fault::Namespaces => {
                p.advance(150, some).await;
                let leader = c.leader().await?;
                let rest: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
                c.partition(&[leader], &rest).await?;
                p.advance(150, a_while).await;
                c.heal().await?;
                p.advance(100, some).await;
                let follower = c.leader().await? % 3 + 1;
                c.unplug(follower, true).await?;
                p.advance(150, a_while).await;
                c.unplug(follower, false).await
            }
            Fault::DiskFull => {
                p.advance(150, some).await;
                let follower = c.leader().await? % 3 + 1;
                let filler = c.disks.get(&follower).ok_or("no small disk")?.fill()?;
                // Its next write fails: the node must say why, and keep running (a node that
                // crashed would be restarted by its supervisor into the same full disk).
                c.until_logged(follower, "No space left on device").await?;
                // Its clients are told why, rather than left waiting.
                let kv = HttpKv::connect(&c.node(follower).kv).await?;
                let refused = match kv.write(b"probe", Some(vec![1]), None).await {
                    Ok(_) => return Err(format!("node {follower} took a write on a full disk")),
                    Err(WriteError::NotApplied(e) | WriteError::Unknown(e)) => e,
                };
                ensure!(
                    refused.contains("No space left on device"),
                    "a write on the node whose disk is full fails without saying why: {refused}"
                );
                // Its status says so.
                let status = c.status(follower).await?;
                ensure!(
                    status.state.starts_with("stopped") && status.state.contains("No space left"),
                    "node {follower}'s status does not say it stopped, and why: {:?}",
                    status.state
                );
                // The others carry on without it.
                let leader = c.leader().await?;
                let at = c.status(leader).await?.last_log_index;
                c.until(
                    "the others commit without the node whose disk is full",
                    |s| s.last_log_index >= at + 20,
                    None,
                )
                .await?;
                let running = c.node_mut(follower).child.as_mut().map(|ch| ch.try_wait());
                ensure!(
                    matches!(running, Some(Ok(None))),
                    "node {follower} exited on a full disk instead of stopping its part in the cluster: {running:?}"
                );
                // Room again: the node restarts on the data it kept, and catches up.
                std::fs::remove_file(&filler).map_err(|e| e.to_string())?;
                c.stop(follower).await?;
                c.restart(kind, follower).await?;
                let leader = c.leader().await?;
                let last = c.status(leader).await?.last_log_index;
                c.until(
                    "the node that ran out of room caught up",
                    |s| s.applied_index >= last,
                    Some(follower),
                )
                .await
            }
            Fault::RollingRestart => {
                for id in 1..=3 {
                    p.advance(80, some).await;
                    c.stop(id).await?;
                    p.advance(40, Duration::from_secs(10)).await;
                    c.restart(kind, id).await?;
                    // The next node goes only once this one is back in the cluster.
                    c.leader().await?;
                }
                Ok(())
            }
        }
    }
}

impl Cluster {
    /// Wait until node `id`'s log holds `text`.
    async fn until_logged(&self, id: u64, text: &str) -> CaseResult {
        let deadline = Instant::now() + RECOVERY;
        let path = self.node(id).dir.join("node.log");
        loop {
            if std::fs::read_to_string(&path).is_ok_and(|log| log.contains(text)) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "node {id} did not log {text:?} within {RECOVERY:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until `node`'s status (the leader's, if `None`) passes `test`.
    async fn until(
        &self,
        what: &str,
        test: impl Fn(&ClusterStatus) -> bool,
        node: Option<u64>,
    ) -> CaseResult {
        let deadline = Instant::now() + RECOVERY;
        loop {
            let id = match node {
                Some(id) => id,
                None => self.leader().await?,
            };
            let status = self.status(id).await?;
            if test(&status) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "not within {RECOVERY:?}: {what}; node {id} reports {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Start node `id`, add it as a learner through the leader, then make it a voter.
    async fn join(&mut self, kind: BackendKind, id: u64) -> CaseResult {
        self.add_links(id, id).await?;
        let node = self.spawn(kind, id, "127.0.0.1:0", 0).await?;
        let member = match admin(
            &node.raft,
            &credentials(),
            &AdminRequest::Describe,
            RECOVERY,
        )
        .await
        {
            Ok(AdminReply::Member { member, .. }) => member,
            other => return Err(format!("describe node {id}: {other:?}")),
        };
        self.nodes.push(node);
        let via = self.node(self.leader().await?).raft.clone();
        let slow = Duration::from_secs(60);
        admin(
            &via,
            &credentials(),
            &AdminRequest::AddLearner { id, member },
            slow,
        )
        .await
        .map_err(|e| format!("add node {id} as a learner: {e}"))?;
        let voters = self.nodes.iter().map(|n| n.id).collect();
        admin(
            &via,
            &credentials(),
            &AdminRequest::ChangeVoters { voters },
            slow,
        )
        .await
        .map_err(|e| format!("promote node {id}: {e}"))?;
        Ok(())
    }
}

async fn leader_killed_under_load(h: &Harness) -> CaseResult {
    run_case(h, Fault::KillLeader).await
}

async fn minority_partition(h: &Harness) -> CaseResult {
    run_case(h, Fault::IsolateFollower).await
}

async fn leader_in_a_minority_of_five(h: &Harness) -> CaseResult {
    run_case(h, Fault::LeaderInMinorityOfFive).await
}

async fn paused_leader(h: &Harness) -> CaseResult {
    run_case(h, Fault::PauseLeader).await
}

async fn slow_links(h: &Harness) -> CaseResult {
    run_case(h, Fault::SlowLinks).await
}

async fn node_joins_through_a_snapshot(h: &Harness) -> CaseResult {
    run_case(h, Fault::JoinThroughSnapshot).await
}

async fn rolling_restart(h: &Harness) -> CaseResult {
    run_case(h, Fault::RollingRestart).await
}

async fn partitions_in_network_namespaces(h: &Harness) -> CaseResult {
    run_case(h, Fault::Namespaces).await
}

async fn follower_disk_fills(h: &Harness) -> CaseResult {
    run_case(h, Fault::DiskFull).await
}

/// Deno's own client (`Deno.openKv`) on every node of a 3-node cluster, no fault: writes
/// through every node, strong reads that see them at once on every node, eventual reads
/// that catch up, and metadata that lists every node as an `eventual` endpoint
/// (`clients/deno/cluster_test.mjs`).
async fn deno_client_on_a_cluster(h: &Harness) -> CaseResult {
    if h.kind != BackendKind::Redb {
        return Err("SKIP: the cluster's Deno client case runs on redb node stores".into());
    }
    let deno = match deno_program() {
        Ok(deno) => deno,
        Err(skip) => return skip,
    };
    let cluster = Cluster::start(h, 3, 10_000, None, BTreeMap::new()).await?;
    let urls: Vec<&str> = cluster.nodes.iter().map(|n| n.kv.as_str()).collect();
    let args = ["test", "-A", "--unstable-kv", "deno/cluster_test.mjs"].map(String::from);
    let result = run_tests(
        &deno,
        &args,
        &[("STRATA_KV_URLS", &urls.join(","))],
        "Deno on a cluster",
    )
    .await
    .map_err(|e| format!("{e}\n{}", cluster.logs()));
    cluster.shutdown().await;
    result
}
