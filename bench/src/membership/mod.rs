//! Membership and chain configuration kept in a directory: etcd for separate processes
//! (`etcd.rs`), an in-memory one of the same interface in-process. Servers register under
//! their chain's name with a lease they renew; the coordinator (`Coordinator`, run by
//! `netmigrate coordinator`) turns registrations and the tail's reports into the chain's
//! membership by chain replication's rules (`migration::membership`); servers and clients
//! read the membership and follow it (docs/replication.md).
//!
//! Keys, under `/netmigrate/<chain>/`: `servers/<ip:port>` (a `Registration`, bound to the
//! server's lease), `members` (the `Membership`, written only by the coordinator, with a
//! compare on its revision), `caught-up` (the epoch in which the tail saw its learner hold
//! everything it holds).

pub mod agent;
#[cfg(feature = "etcd")]
pub mod etcd;

use migration::chain::ChainConfig;
use migration::membership::Membership;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::time::Duration;

/// One run of a server process: its address (partition 0's) and a number drawn at start,
/// so that a restarted process is not taken for the one that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerId {
    pub addr: SocketAddrV4,
    pub incarnation: u64,
}

/// What a server says of itself when it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub id: ServerId,
    /// It rebuilt its partitions from its own log (it may take its chain's last place back).
    pub recovered: bool,
}

/// A chain's membership as stored: the coordinator's.
pub type ChainMembers = Membership<ServerId>;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("the stored {what} does not parse: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("the lease ended (the directory no longer lists this server)")]
    LeaseLost,
}

/// Where membership lives. Blocking calls: each user (a server's agent thread, the
/// coordinator, a client's view thread) owns its directory handle.
pub trait Directory {
    /// Registers a server of `chain` for as long as it renews within `ttl`: a lease id.
    fn register(
        &mut self,
        chain: &str,
        registration: &Registration,
        ttl: Duration,
    ) -> Result<i64, DirectoryError>;
    fn renew(&mut self, lease: i64) -> Result<(), DirectoryError>;
    /// The servers of `chain` whose leases are live.
    fn registered(&mut self, chain: &str) -> Result<Vec<Registration>, DirectoryError>;
    /// The chain's membership and the revision to compare against when changing it.
    fn members(&mut self, chain: &str) -> Result<Option<(ChainMembers, i64)>, DirectoryError>;
    /// Stores `members` if the stored membership is still at `revision` (0: none yet):
    /// false when another writer changed it first.
    fn put_members(
        &mut self,
        chain: &str,
        members: &ChainMembers,
        revision: i64,
    ) -> Result<bool, DirectoryError>;
    /// The tail of `epoch` reports that its learner caught up.
    fn report_caught_up(&mut self, chain: &str, epoch: u32) -> Result<(), DirectoryError>;
    fn caught_up(&mut self, chain: &str) -> Result<Option<u32>, DirectoryError>;
}

/// A directory handle on the etcd at `endpoints`.
pub fn connect(endpoints: &[String]) -> Result<Box<dyn Directory + Send>, String> {
    #[cfg(feature = "etcd")]
    {
        let directory = etcd::EtcdDirectory::connect(endpoints).map_err(|e| e.to_string())?;
        Ok(Box::new(directory))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = endpoints;
        Err(
            "this netmigrate was built without etcd: build it with `--features etcd` \
             (scripts/setup.sh installs protoc and etcd-server)"
                .into(),
        )
    }
}

pub fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DirectoryError> {
    serde_json::from_slice(bytes).map_err(|e| DirectoryError::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// Partition `partition`'s chain configuration from the chain's membership.
pub fn partition_config(members: &ChainMembers, partition: u32) -> ChainConfig {
    let addr = |id: &ServerId| crate::server::partition_addr(id.addr, partition);
    ChainConfig {
        epoch: members.epoch,
        members: members.members.iter().map(addr).collect(),
        learner: members.learner.as_ref().map(addr),
    }
}

/// The coordinator of one chain: stateless beyond the directory, so it may be restarted
/// (or run twice: a membership is written with a compare on its revision).
pub struct Coordinator {
    pub chain: String,
    /// Replicas a new chain starts with (the first this many servers to register).
    pub replicas: usize,
    /// Each warning once per epoch.
    warned_epoch: u32,
}

/// What a coordinator's turn did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Not enough servers registered yet to form the chain.
    Forming {
        registered: usize,
    },
    Unchanged,
    Changed(ChainMembers),
    /// Another coordinator changed the membership first: the next turn starts over.
    Raced,
}

impl Coordinator {
    pub fn new(chain: &str, replicas: usize) -> Self {
        Coordinator {
            chain: chain.to_string(),
            replicas,
            warned_epoch: 0,
        }
    }

    /// One look at the directory: forms the chain, takes out replicas whose lease ended
    /// (or that restarted), lets restarted ones wait and learn, promotes a caught-up
    /// learner.
    pub fn turn(&mut self, directory: &mut dyn Directory) -> Result<Turn, DirectoryError> {
        let mut registered = directory.registered(&self.chain)?;
        registered.sort_by_key(|r| r.id);
        let Some((stored, revision)) = directory.members(&self.chain)? else {
            if registered.len() < self.replicas {
                return Ok(Turn::Forming {
                    registered: registered.len(),
                });
            }
            let first = registered
                .iter()
                .take(self.replicas)
                .map(|r| r.id)
                .collect();
            return self.store(directory, ChainMembers::new(first), 0);
        };
        let mut members = stored.clone();
        self.take_out_the_dead(&mut members, &registered);
        for r in &registered {
            members.join(r.id);
        }
        if let Some(epoch) = directory.caught_up(&self.chain)? {
            members.promote_learner(epoch);
        }
        members.admit_learner();
        if members == stored {
            return Ok(Turn::Unchanged);
        }
        self.store(directory, members, revision)
    }

    /// Writes `members` over the membership at `revision`.
    fn store(
        &self,
        directory: &mut dyn Directory,
        members: ChainMembers,
        revision: i64,
    ) -> Result<Turn, DirectoryError> {
        let written = directory.put_members(&self.chain, &members, revision)?;
        Ok(if written {
            Turn::Changed(members)
        } else {
            Turn::Raced
        })
    }

    /// Replicas with no live registration leave the chain. A last member that died stays
    /// named: only it holds the chain's state. When it comes back from its own log it
    /// takes its place again (a new epoch); back without its log, the chain's state is
    /// gone and it is not reinstated: the chain is refused loudly instead.
    fn take_out_the_dead(&mut self, members: &mut ChainMembers, registered: &[Registration]) {
        let live: HashSet<ServerId> = registered.iter().map(|r| r.id).collect();
        let dead: Vec<ServerId> = members
            .named()
            .filter(|id| !live.contains(id))
            .copied()
            .collect();
        for id in dead {
            members.fail(&id);
        }
        let last = members.members[0];
        if members.members.len() > 1 || live.contains(&last) {
            return;
        }
        let back = registered.iter().find(|r| r.id.addr == last.addr);
        match back {
            Some(r) if r.recovered => members.reinstate_last(r.id),
            Some(_) if self.warned_epoch != members.epoch => {
                self.warned_epoch = members.epoch;
                eprintln!(
                    "netmigrate coordinator: chain {}: its last replica {} came back without \
                     its log: the chain's state is lost and it is not served (restart that \
                     server with its --log-dir)",
                    self.chain, last.addr
                );
            }
            _ => {}
        }
    }
}

/// The directory in memory, for in-process use and tests: leases end when the clock,
/// advanced by hand, passes them.
#[derive(Default)]
pub struct MemoryDirectory {
    now: Duration,
    next_lease: i64,
    /// lease → (deadline, ttl)
    leases: HashMap<i64, (Duration, Duration)>,
    /// (chain, registration, lease)
    servers: Vec<(String, Registration, i64)>,
    members: HashMap<String, (ChainMembers, i64)>,
    caught_up: HashMap<String, u32>,
    revision: i64,
}

impl MemoryDirectory {
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        self.leases.retain(|_, (deadline, _)| *deadline > now);
        let leases = &self.leases;
        self.servers
            .retain(|(_, _, lease)| leases.contains_key(lease));
    }
}

impl Directory for MemoryDirectory {
    fn register(
        &mut self,
        chain: &str,
        registration: &Registration,
        ttl: Duration,
    ) -> Result<i64, DirectoryError> {
        self.next_lease += 1;
        let lease = self.next_lease;
        self.leases.insert(lease, (self.now + ttl, ttl));
        let addr = registration.id.addr;
        self.servers
            .retain(|(c, r, _)| !(c == chain && r.id.addr == addr));
        self.servers.push((chain.to_string(), *registration, lease));
        Ok(lease)
    }

    fn renew(&mut self, lease: i64) -> Result<(), DirectoryError> {
        let now = self.now;
        let (deadline, ttl) = self
            .leases
            .get_mut(&lease)
            .ok_or(DirectoryError::LeaseLost)?;
        *deadline = now + *ttl;
        Ok(())
    }

    fn registered(&mut self, chain: &str) -> Result<Vec<Registration>, DirectoryError> {
        let servers = self.servers.iter().filter(|(c, _, _)| c == chain);
        Ok(servers.map(|(_, r, _)| *r).collect())
    }

    fn members(&mut self, chain: &str) -> Result<Option<(ChainMembers, i64)>, DirectoryError> {
        Ok(self.members.get(chain).cloned())
    }

    fn put_members(
        &mut self,
        chain: &str,
        members: &ChainMembers,
        revision: i64,
    ) -> Result<bool, DirectoryError> {
        let stored = self.members.get(chain).map_or(0, |(_, r)| *r);
        if stored != revision {
            return Ok(false);
        }
        self.revision += 1;
        self.members
            .insert(chain.to_string(), (members.clone(), self.revision));
        Ok(true)
    }

    fn report_caught_up(&mut self, chain: &str, epoch: u32) -> Result<(), DirectoryError> {
        self.caught_up.insert(chain.to_string(), epoch);
        Ok(())
    }

    fn caught_up(&mut self, chain: &str) -> Result<Option<u32>, DirectoryError> {
        Ok(self.caught_up.get(chain).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn id(n: u8, incarnation: u64) -> ServerId {
        ServerId {
            addr: SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, n), 7100),
            incarnation,
        }
    }

    fn register(directory: &mut MemoryDirectory, id: ServerId, recovered: bool) -> i64 {
        let registration = Registration { id, recovered };
        let ttl = Duration::from_secs(2);
        directory.register("c", &registration, ttl).unwrap()
    }

    fn members(directory: &mut MemoryDirectory) -> ChainMembers {
        directory.members("c").unwrap().unwrap().0
    }

    #[test]
    fn a_chain_forms_once_enough_servers_registered() {
        let mut directory = MemoryDirectory::default();
        let mut coordinator = Coordinator::new("c", 3);
        register(&mut directory, id(2, 1), false);
        register(&mut directory, id(1, 1), false);
        let turn = coordinator.turn(&mut directory).unwrap();
        assert_eq!(turn, Turn::Forming { registered: 2 });
        register(&mut directory, id(3, 1), false);
        coordinator.turn(&mut directory).unwrap();
        assert_eq!(
            members(&mut directory).members,
            vec![id(1, 1), id(2, 1), id(3, 1)]
        );
        let turn = coordinator.turn(&mut directory).unwrap();
        assert_eq!(turn, Turn::Unchanged);
    }

    #[test]
    fn a_dead_head_is_replaced_and_its_restart_learns_then_joins_as_tail() {
        let mut directory = MemoryDirectory::default();
        let mut coordinator = Coordinator::new("c", 3);
        let leases: Vec<i64> = (1..=3)
            .map(|n| register(&mut directory, id(n, 1), false))
            .collect();
        coordinator.turn(&mut directory).unwrap();
        // The head stops renewing; the others renew.
        directory.advance(Duration::from_millis(1500));
        directory.renew(leases[1]).unwrap();
        directory.renew(leases[2]).unwrap();
        directory.advance(Duration::from_millis(1000));
        assert!(directory.renew(leases[0]).is_err(), "its lease ended");
        coordinator.turn(&mut directory).unwrap();
        let chain = members(&mut directory);
        assert_eq!(chain.members, vec![id(2, 1), id(3, 1)]);
        // It restarts: a new incarnation at the same address waits, then learns.
        register(&mut directory, id(1, 2), false);
        coordinator.turn(&mut directory).unwrap();
        let chain = members(&mut directory);
        assert_eq!(chain.learner, Some(id(1, 2)));
        // A report from before the learner was admitted promotes nobody.
        directory.report_caught_up("c", chain.epoch - 1).unwrap();
        assert_eq!(coordinator.turn(&mut directory).unwrap(), Turn::Unchanged);
        directory.report_caught_up("c", chain.epoch).unwrap();
        coordinator.turn(&mut directory).unwrap();
        assert_eq!(
            members(&mut directory).members,
            vec![id(2, 1), id(3, 1), id(1, 2)]
        );
    }

    #[test]
    fn a_restarted_replica_is_not_taken_for_the_one_that_died() {
        let mut directory = MemoryDirectory::default();
        let mut coordinator = Coordinator::new("c", 2);
        register(&mut directory, id(1, 1), false);
        register(&mut directory, id(2, 1), false);
        coordinator.turn(&mut directory).unwrap();
        // Restarted before its lease ended: the new registration replaces the old one.
        register(&mut directory, id(2, 7), false);
        coordinator.turn(&mut directory).unwrap();
        let chain = members(&mut directory);
        assert_eq!(chain.members, vec![id(1, 1)]);
        assert_eq!(chain.learner, Some(id(2, 7)));
    }

    #[test]
    fn a_last_member_takes_its_place_back_only_with_its_log() {
        let mut directory = MemoryDirectory::default();
        let mut coordinator = Coordinator::new("c", 2);
        register(&mut directory, id(1, 1), false);
        register(&mut directory, id(2, 1), false);
        coordinator.turn(&mut directory).unwrap();
        directory.advance(Duration::from_secs(3));
        coordinator.turn(&mut directory).unwrap();
        let chain = members(&mut directory);
        assert_eq!(chain.members.len(), 1, "the last member stays named");
        let last = chain.members[0];
        let other = if last == id(1, 1) { id(2, 2) } else { id(1, 2) };
        // Back without its log: not reinstated; the other waits.
        register(
            &mut directory,
            ServerId {
                incarnation: 2,
                ..last
            },
            false,
        );
        register(&mut directory, other, false);
        coordinator.turn(&mut directory).unwrap();
        let chain = members(&mut directory);
        assert_eq!(chain.members, vec![last]);
        // Back from its log: it serves again, and the other one learns from it.
        let back = ServerId {
            incarnation: 3,
            ..last
        };
        register(&mut directory, back, true);
        coordinator.turn(&mut directory).unwrap();
        let chain = members(&mut directory);
        assert_eq!(chain.members, vec![back]);
        assert_eq!(chain.learner, Some(other));
    }

    #[test]
    fn a_membership_changed_meanwhile_is_not_overwritten() {
        let mut directory = MemoryDirectory::default();
        let chain = ChainMembers::new(vec![id(1, 1)]);
        assert!(directory.put_members("c", &chain, 0).unwrap());
        assert!(!directory.put_members("c", &chain, 0).unwrap());
        let (_, revision) = directory.members("c").unwrap().unwrap();
        assert!(directory.put_members("c", &chain, revision).unwrap());
    }
}
