//! `strata serve --cluster` and `strata cluster …`: running a replicated node, and changing
//! a cluster's membership from the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use strata::{Backend, StoreUrl};
use strata_replication::network::{admin, AdminReply, AdminRequest, Credentials};
use strata_replication::{ClusterConfig, ClusterStatus, Member, Node, NodeId};

/// The Raft address a node listens on unless told otherwise.
pub const DEFAULT_RAFT: &str = "127.0.0.1:7001";

/// The cluster's name unless told otherwise.
const DEFAULT_CLUSTER_ID: &str = "strata";

/// How often a node configured with its peers looks for them until the cluster is formed.
const FORM_RETRY: Duration = Duration::from_secs(1);

/// How long a membership change may take: adding a learner waits for it to catch up.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Clone)]
pub struct Access {
    /// The cluster's name: nodes refuse calls meant for another cluster [default: strata].
    #[arg(long, env = "STRATA_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// The secret every member shares, at least 16 characters (also STRATA_CLUSTER_SECRET).
    #[arg(long, env = "STRATA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
}

impl Access {
    fn credentials(&self) -> Result<Credentials, String> {
        let secret = self
            .cluster_secret
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(
            "a cluster needs a shared secret: pass --cluster-secret or set STRATA_CLUSTER_SECRET",
        )?;
        if secret.len() < 16 {
            return Err("the cluster secret must be at least 16 characters".into());
        }
        let cluster_id = self.cluster_id.as_deref().unwrap_or(DEFAULT_CLUSTER_ID);
        if cluster_id.is_empty() || !cluster_id.is_ascii() {
            return Err("the cluster id must be non-empty ASCII".into());
        }
        Ok(Credentials {
            cluster_id: cluster_id.to_string(),
            secret,
        })
    }
}

#[derive(clap::Args, Clone)]
pub struct NodeArgs {
    /// Serve as a node of a replicated cluster: every frontend reads and writes the
    /// cluster's data (with --node-id and a cluster secret; then `strata cluster init`, or
    /// --peer). A `[cluster]` section in db.toml does the same.
    #[arg(long)]
    pub cluster: bool,
    /// This node's id: a number unique in the cluster.
    #[arg(long)]
    pub node_id: Option<NodeId>,
    /// Where this node listens for the other nodes [default: 127.0.0.1:7001].
    #[arg(long)]
    pub raft: Option<String>,
    /// The address the other nodes reach this one at, when it differs from --raft.
    #[arg(long)]
    pub raft_advertise: Option<String>,
    /// Another node's Raft address, repeatable: nodes started with each other as peers form
    /// the cluster themselves at first start (the one with the lowest id initializes it,
    /// once every peer answers), with no `strata cluster init`.
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<String>,
    /// Build a snapshot (and compact the log behind it) after at least this many log
    /// entries, once they also wrote a quarter of the last snapshot's size [default: 10000].
    #[arg(long)]
    pub raft_snapshot_every: Option<u64>,
    /// How many log entries to keep behind a snapshot, for followers that lag a little to
    /// catch up from the log instead of a snapshot [default: 1000].
    #[arg(long, value_name = "N")]
    pub raft_keep_after_snapshot: Option<u64>,
    /// While this node leads: how many commit groups may be in the Raft log at once, each
    /// proposed while those before it replicate (1: one at a time) [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub raft_groups_in_flight: Option<u16>,
    /// While this node leads: how long, in milliseconds, the next commit group may wait
    /// for as many commits as the group before it answered (clients just answered usually
    /// commit again at once; one Raft round then carries them all) [default: 2; 0: never].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub raft_group_linger: Option<u16>,
    /// Reach peer ID at ADDR instead of the address it advertises (a tunnel or NAT):
    /// ID=ADDR, repeatable.
    #[arg(long = "raft-peer-via", value_name = "ID=ADDR")]
    pub raft_peer_via: Vec<String>,
    #[command(flatten)]
    pub access: Access,
}

impl NodeArgs {
    /// Fill in what the flags left out from db.toml's `[cluster]` (its presence makes this a
    /// cluster node).
    #[cfg(feature = "rest")]
    pub fn with_file(
        mut self,
        section: Option<&strata_rest::config::ClusterSection>,
        secret: Option<String>,
    ) -> NodeArgs {
        if let Some(c) = section {
            self.cluster = true;
            self.node_id = self.node_id.or(c.node_id);
            self.raft = self.raft.take().or_else(|| c.raft.clone());
            self.raft_advertise = self.raft_advertise.take().or_else(|| c.advertise.clone());
            if self.peers.is_empty() {
                self.peers = c.peers.clone();
            }
            self.raft_snapshot_every = self.raft_snapshot_every.or(c.snapshot_every);
            self.raft_keep_after_snapshot = self.raft_keep_after_snapshot.or(c.keep_after_snapshot);
            self.raft_groups_in_flight = self.raft_groups_in_flight.or(c.groups_in_flight);
            self.raft_group_linger = self.raft_group_linger.or(c.group_linger_ms);
            if self.raft_peer_via.is_empty() {
                self.raft_peer_via = c
                    .peer_via
                    .iter()
                    .map(|(id, a)| format!("{id}={a}"))
                    .collect();
            }
            self.access.cluster_id = self
                .access
                .cluster_id
                .take()
                .or_else(|| c.cluster_id.clone());
            self.access.cluster_secret = self.access.cluster_secret.take().or(secret);
        }
        self
    }

    /// Refuse cluster settings given to a node that is not a cluster node.
    pub fn check(self) -> Result<NodeArgs, String> {
        let given = self.node_id.is_some()
            || self.raft.is_some()
            || self.raft_advertise.is_some()
            || !self.peers.is_empty()
            || self.raft_snapshot_every.is_some()
            || self.raft_keep_after_snapshot.is_some()
            || self.raft_groups_in_flight.is_some()
            || self.raft_group_linger.is_some()
            || !self.raft_peer_via.is_empty();
        if given && !self.cluster {
            return Err(
                "--node-id, --raft, --peer and the other cluster settings are for a cluster node: \
                 add --cluster (or a [cluster] section to db.toml)"
                    .into(),
            );
        }
        if let Some(ms @ 1001..) = self.raft_group_linger {
            return Err(format!(
                "the group linger must be from 0 to 1000 ms (got {ms}): how long the leader's \
                 next commit group may wait for the clients it just answered"
            ));
        }
        if let Some(n @ (0 | 65..)) = self.raft_groups_in_flight {
            return Err(format!(
                "groups in flight must be from 1 to 64 (got {n}): how many commit groups the \
                 leader keeps in the Raft log at once"
            ));
        }
        Ok(self)
    }
}

/// Start this process's node over its local store. Its data directory keeps the Raft log's
/// entries (`raft-log/`), its vote and marks (the database `.raft`) and the snapshots
/// (`raft-snapshots/`).
pub async fn start_node(
    backend: Arc<dyn Backend>,
    args: &NodeArgs,
    store: &StoreUrl,
) -> Result<Arc<Node>, String> {
    let node_id = args
        .node_id
        .ok_or("a cluster node needs --node-id (a number unique in the cluster)")?;
    if node_id == 0 {
        return Err("--node-id must be at least 1".into());
    }
    let (snapshots, log) = match store {
        StoreUrl::Redb(dir) | StoreUrl::Sqlite(dir) => {
            (dir.join("raft-snapshots"), Some(dir.join("raft-log")))
        }
        StoreUrl::Memory => (
            std::env::temp_dir().join(format!("strata-raft-{}-{node_id}", std::process::id())),
            None,
        ),
        StoreUrl::Dynamodb(_) => {
            return Err(
                "a cluster node keeps its copy in a local store (redb: or sqlite:); \
                        DynamoDB is shared already and needs no replication"
                    .into(),
            )
        }
    };
    let mut config = ClusterConfig::new(
        node_id,
        args.raft.as_deref().unwrap_or(DEFAULT_RAFT),
        args.access.credentials()?,
        snapshots,
    );
    config.log_dir = log;
    config.advertise = args.raft_advertise.clone();
    if let Some(every) = args.raft_snapshot_every {
        config.snapshot_every = every.max(1);
    }
    if let Some(keep) = args.raft_keep_after_snapshot {
        config.keep_after_snapshot = keep;
    }
    for via in &args.raft_peer_via {
        let (id, addr) = via
            .split_once('=')
            .and_then(|(id, addr)| Some((id.parse::<NodeId>().ok()?, addr)))
            .ok_or_else(|| format!("--raft-peer-via wants ID=ADDR, not {via:?}"))?;
        config.dial_via.insert(id, addr.to_string());
    }
    let creds = config.credentials.clone();
    let node = Node::start(backend, config)
        .await
        .map_err(|e| e.to_string())?;
    let initialized = node.is_initialized().await;
    eprintln!(
        "cluster node {node_id} on {} ({})",
        node.member().raft_addr,
        if initialized {
            "rejoining its cluster"
        } else if args.peers.is_empty() {
            "waiting for `strata cluster init` or to be added"
        } else {
            "forming the cluster with its peers"
        }
    );
    if !initialized && !args.peers.is_empty() {
        tokio::spawn(form(node.clone(), args.peers.clone(), creds));
    }
    Ok(node)
}

/// Form a new cluster of this node and its configured peers, once every peer answers: the
/// node with the lowest id initializes it, the others wait to hear from its leader. If a
/// peer already belongs to a cluster, nothing is formed: this node (a new one, or one that
/// lost its data) waits to be added with `strata cluster add-learner`, because starting a
/// second cluster beside the first would split it.
async fn form(node: Arc<Node>, peers: Vec<String>, creds: Credentials) {
    let mut told = false;
    loop {
        if node.is_initialized().await {
            return;
        }
        match probe(node.id(), &peers, &creds).await {
            Probe::Joining => return,
            Probe::Missing(addr, why) => {
                if !told {
                    eprintln!(
                        "cluster node {}: waiting for peer {addr} ({why})",
                        node.id()
                    );
                    told = true;
                }
            }
            Probe::Formed(addr) => {
                eprintln!(
                    "cluster node {}: peer {addr} already belongs to a cluster; this node waits \
                     to be added (`strata cluster add-learner`)",
                    node.id()
                );
                return;
            }
            Probe::Ready(mut members) => {
                // The same peer list may be given to every node, this one included; another
                // node with this one's id is a mistake.
                match members.get(&node.id()) {
                    Some(m) if m.raft_addr == node.member().raft_addr => {
                        members.remove(&node.id());
                    }
                    Some(_) => {
                        eprintln!(
                            "cluster node {}: a peer has the same id; give each node its own --node-id",
                            node.id()
                        );
                        return;
                    }
                    None => {}
                }
                let lowest = members.keys().all(|id| *id > node.id());
                if lowest {
                    match node.admin(AdminRequest::Initialize { members }).await {
                        Ok(_) => {
                            eprintln!("cluster node {}: formed the cluster", node.id());
                            return;
                        }
                        Err(e) => {
                            eprintln!(
                                "cluster node {}: forming the cluster failed: {e}",
                                node.id()
                            )
                        }
                    }
                }
            }
        }
        tokio::time::sleep(FORM_RETRY).await;
    }
}

enum Probe {
    /// Every peer answered, none in a cluster yet: their ids and addresses.
    Ready(BTreeMap<NodeId, Member>),
    /// This peer did not answer, and why.
    Missing(String, String),
    /// This peer belongs to a cluster already.
    Formed(String),
    /// A peer has formed the cluster with this node in it.
    Joining,
}

async fn probe(me: NodeId, peers: &[String], creds: &Credentials) -> Probe {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
    let mut members = BTreeMap::new();
    for addr in peers {
        match status_of(addr, creds, PROBE_TIMEOUT).await {
            Ok(s) if !s.nodes.is_empty() => {
                return match s.nodes.iter().any(|n| n.id == me) {
                    // Initialized with this node in it: it hears from the leader shortly.
                    true => Probe::Joining,
                    false => Probe::Formed(addr.clone()),
                };
            }
            Ok(_) => {}
            Err(e) => return Probe::Missing(addr.clone(), e),
        }
        match describe(addr, creds, PROBE_TIMEOUT).await {
            Ok((id, member)) => {
                members.insert(id, member);
            }
            Err(e) => return Probe::Missing(addr.clone(), e),
        }
    }
    Probe::Ready(members)
}

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Make a new cluster of running nodes (`strata serve --cluster`), given their Raft
    /// addresses: all become voters, the first is asked to start it.
    Init {
        #[arg(required = true)]
        nodes: Vec<String>,
        #[command(flatten)]
        access: Access,
    },
    /// Add a running node (by its Raft address) as a learner: it copies the data, from the
    /// log or a snapshot, and follows without voting until promoted.
    AddLearner {
        node: String,
        /// Any node of the cluster.
        #[arg(long, default_value = DEFAULT_RAFT)]
        via: String,
        #[command(flatten)]
        access: Access,
    },
    /// Make learners voters.
    Promote {
        #[arg(required = true)]
        ids: Vec<NodeId>,
        #[arg(long, default_value = DEFAULT_RAFT)]
        via: String,
        #[command(flatten)]
        access: Access,
    },
    /// Take nodes out of the cluster.
    Remove {
        #[arg(required = true)]
        ids: Vec<NodeId>,
        #[arg(long, default_value = DEFAULT_RAFT)]
        via: String,
        #[command(flatten)]
        access: Access,
    },
    /// The leader, the term, log indexes, and each node's lag behind the leader.
    Status {
        #[arg(long, default_value = DEFAULT_RAFT)]
        via: String,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        access: Access,
    },
}

async fn ask(addr: &str, creds: &Credentials, req: AdminRequest) -> Result<AdminReply, String> {
    admin(addr, creds, &req, ADMIN_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

/// Who the node at `addr` is, and how to reach it; waiting at most `wait`.
async fn describe(
    addr: &str,
    creds: &Credentials,
    wait: Duration,
) -> Result<(NodeId, Member), String> {
    match admin(addr, creds, &AdminRequest::Describe, wait).await {
        Ok(AdminReply::Member { id, member }) => Ok((id, member)),
        Ok(_) => Err(format!("{addr} gave an unexpected answer")),
        Err(e) => Err(e.to_string()),
    }
}

/// The cluster as the node at `addr` sees it; waiting at most `wait`.
async fn status_of(
    addr: &str,
    creds: &Credentials,
    wait: Duration,
) -> Result<ClusterStatus, String> {
    match admin(addr, creds, &AdminRequest::Status, wait).await {
        Ok(AdminReply::Status(s)) => Ok(s),
        Ok(_) => Err(format!("{addr} gave an unexpected answer")),
        Err(e) => Err(e.to_string()),
    }
}

/// The status as the leader sees it (it alone knows every node's progress), else as `via`
/// does.
async fn cluster_status(via: &str, creds: &Credentials) -> Result<ClusterStatus, String> {
    let local = status_of(via, creds, ADMIN_TIMEOUT).await?;
    let leader_addr = local
        .leader
        .filter(|l| *l != local.node)
        .and_then(|l| local.nodes.iter().find(|n| n.id == l))
        .map(|n| n.raft_addr.clone());
    match leader_addr {
        Some(addr) => Ok(status_of(&addr, creds, ADMIN_TIMEOUT)
            .await
            .unwrap_or(local)),
        None => Ok(local),
    }
}

pub async fn run(command: ClusterCommand) -> Result<(), String> {
    match command {
        ClusterCommand::Init { nodes, access } => {
            let creds = access.credentials()?;
            let mut members = BTreeMap::new();
            for addr in &nodes {
                let (id, member) = describe(addr, &creds, ADMIN_TIMEOUT).await?;
                if members.insert(id, member).is_some() {
                    return Err(format!(
                        "two nodes have id {id}: give each a unique --node-id"
                    ));
                }
            }
            ask(&nodes[0], &creds, AdminRequest::Initialize { members }).await?;
            eprintln!("initialized a cluster of {} node(s)", nodes.len());
            print_status(&cluster_status(&nodes[0], &creds).await?);
        }
        ClusterCommand::AddLearner { node, via, access } => {
            let creds = access.credentials()?;
            let (id, member) = describe(&node, &creds, ADMIN_TIMEOUT).await?;
            eprintln!("adding node {id} ({node}) as a learner; it catches up first");
            ask(&via, &creds, AdminRequest::AddLearner { id, member }).await?;
            eprintln!("node {id} is a learner: `strata cluster promote {id}` makes it a voter");
        }
        ClusterCommand::Promote { ids, via, access } => {
            let creds = access.credentials()?;
            let status = cluster_status(&via, &creds).await?;
            let mut voters: BTreeSet<NodeId> = status
                .nodes
                .iter()
                .filter(|n| n.voter)
                .map(|n| n.id)
                .collect();
            for id in &ids {
                if !status.nodes.iter().any(|n| n.id == *id) {
                    return Err(format!(
                        "node {id} is not in the cluster: add it with `strata cluster add-learner` first"
                    ));
                }
                voters.insert(*id);
            }
            ask(&via, &creds, AdminRequest::ChangeVoters { voters }).await?;
            eprintln!("promoted {ids:?}");
        }
        ClusterCommand::Remove { ids, via, access } => {
            let creds = access.credentials()?;
            let ids: BTreeSet<NodeId> = ids.into_iter().collect();
            ask(&via, &creds, AdminRequest::Remove { ids: ids.clone() }).await?;
            eprintln!("removed {ids:?}");
        }
        ClusterCommand::Status { via, json, access } => {
            let creds = access.credentials()?;
            let status = cluster_status(&via, &creds).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).map_err(|e| e.to_string())?
                );
            } else {
                print_status(&status);
            }
        }
    }
    Ok(())
}

fn print_status(s: &ClusterStatus) {
    let leader = s
        .leader
        .map(|l| l.to_string())
        .unwrap_or_else(|| "none".into());
    println!(
        "cluster {}: leader {leader}, term {}; as node {} ({}) sees it: log {}, applied {}, snapshot {}, purged {}",
        s.cluster_id,
        s.term,
        s.node,
        s.state,
        s.last_log_index,
        s.applied_index,
        opt(s.snapshot_index),
        opt(s.purged_index),
    );
    println!(
        "{:>4}  {:<8}  {:<22}  {:>8}  {:>6}  endpoints",
        "node", "role", "raft", "matched", "lag"
    );
    for n in &s.nodes {
        let role = if Some(n.id) == s.leader {
            "leader"
        } else if n.voter {
            "voter"
        } else {
            "learner"
        };
        let endpoints: Vec<String> = n
            .endpoints
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:>4}  {:<8}  {:<22}  {:>8}  {:>6}  {}",
            n.id,
            role,
            n.raft_addr,
            opt(n.matched_index),
            opt(n.lag),
            endpoints.join(" ")
        );
        if let Some(ms) = n.unanswered_ms {
            println!(
                "{:>4}  not answering for {:.1} s: {}",
                "",
                ms as f64 / 1000.0,
                n.unanswered_error.as_deref().unwrap_or("no reason given")
            );
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}
