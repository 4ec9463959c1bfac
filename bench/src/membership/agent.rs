//! The threads that connect processes to the directory: a server's agent (registers, passes
//! each new membership to the partition loops, reports a caught-up learner), a client's
//! view (the chain's members, for the client loops to follow), and the coordinator's loop.

use super::{ChainMembers, Coordinator, Directory, DirectoryError, Registration, Turn};
use crate::client::ChainView;
use crate::server::ServerControl;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the threads look at the directory (a membership change reaches the
/// partitions within about this, after the coordinator wrote it).
pub const LOOK_EVERY: Duration = Duration::from_millis(20);

/// Prints a directory error at most once a second (the directory may be down a while).
struct Complaints {
    who: &'static str,
    last: Option<Instant>,
}

impl Complaints {
    fn new(who: &'static str) -> Self {
        Complaints { who, last: None }
    }

    fn note(&mut self, e: &DirectoryError) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            self.last = Some(now);
            eprintln!("netmigrate {}: {e}; trying again", self.who);
        }
    }
}

/// What a server agent does.
pub struct ServerAgent {
    pub chain: String,
    pub registration: Registration,
    pub ttl: Duration,
}

impl ServerAgent {
    /// Runs until `stop`. A membership naming this server's address under another
    /// incarnation (the process it replaced) is not applied: the partitions wait, serving
    /// nothing, until the coordinator has taken the old one out.
    pub fn run(&self, directory: &mut dyn Directory, control: &ServerControl, stop: &AtomicBool) {
        let mut complaints = Complaints::new("server");
        let mut lease = None;
        let mut renew_at = Instant::now();
        let mut applied_epoch = 0;
        let mut reported_epoch = 0;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if let Err(e) = self.keep_registered(directory, &mut lease, &mut renew_at, now) {
                complaints.note(&e);
            }
            match directory.members(&self.chain) {
                Ok(Some((members, _))) => {
                    if members.epoch != applied_epoch && self.may_apply(&members) {
                        applied_epoch = members.epoch;
                        control.configure_chain(&members);
                        eprintln!(
                            "netmigrate server: chain {} epoch {}: {:?}",
                            self.chain,
                            members.epoch,
                            members.place_of(&self.registration.id)
                        );
                    }
                    if members.epoch != reported_epoch && tail_caught_up(control, members.epoch) {
                        match directory.report_caught_up(&self.chain, members.epoch) {
                            Ok(()) => reported_epoch = members.epoch,
                            Err(e) => complaints.note(&e),
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => complaints.note(&e),
            }
            std::thread::sleep(LOOK_EVERY);
        }
    }

    /// Registers, then renews the lease a few times per TTL. A lease that ended is taken
    /// again under the same incarnation: the process kept its state, and the coordinator
    /// either never saw it gone or already took it out (then it comes back as a learner).
    fn keep_registered(
        &self,
        directory: &mut dyn Directory,
        lease: &mut Option<i64>,
        renew_at: &mut Instant,
        now: Instant,
    ) -> Result<(), DirectoryError> {
        if now < *renew_at {
            return Ok(());
        }
        *renew_at = now + self.ttl / 4;
        match *lease {
            Some(id) => match directory.renew(id) {
                Err(DirectoryError::LeaseLost) => {
                    *lease = None;
                    Err(DirectoryError::LeaseLost)
                }
                other => other,
            },
            None => {
                *lease = Some(directory.register(&self.chain, &self.registration, self.ttl)?);
                Ok(())
            }
        }
    }

    fn may_apply(&self, members: &ChainMembers) -> bool {
        let me = self.registration.id;
        let mut at_my_address = members.named().filter(|id| id.addr == me.addr);
        at_my_address.all(|id| *id == me)
    }
}

/// Whether every partition is in `epoch` the tail (a chain of one: also its head) whose
/// learner caught up.
fn tail_caught_up(control: &ServerControl, epoch: u32) -> bool {
    let reports = control.reports();
    !reports.is_empty()
        && reports.iter().all(|r| {
            r.chain
                .is_some_and(|c| c.epoch == epoch && c.learner_caught_up)
        })
}

/// Keeps `view` at the chain's current members until the view is closed.
pub fn follow_members(directory: &mut dyn Directory, chain: &str, view: &ChainView) {
    let mut complaints = Complaints::new("client");
    while !view.closed() {
        match directory.members(chain) {
            Ok(Some((members, _))) => publish(view, &members),
            Ok(None) => {}
            Err(e) => complaints.note(&e),
        }
        std::thread::sleep(LOOK_EVERY);
    }
}

/// Gives `view` the members of `members` (partition 0 addresses, head first).
pub fn publish(view: &ChainView, members: &ChainMembers) {
    let addrs: Vec<_> = members.members.iter().map(|id| id.addr).collect();
    view.publish(members.epoch, &addrs);
}

/// The coordinator's loop: a turn every `LOOK_EVERY` until `stop`, each change printed.
pub fn coordinate(directory: &mut dyn Directory, coordinator: &mut Coordinator, stop: &AtomicBool) {
    let mut complaints = Complaints::new("coordinator");
    let mut forming_said = usize::MAX;
    while !stop.load(Ordering::Relaxed) {
        match coordinator.turn(directory) {
            Ok(Turn::Changed(members)) => {
                let waiting: Vec<_> = members.waiting.iter().copied().collect();
                eprintln!(
                    "netmigrate coordinator: chain {} epoch {}: members {}, learner {}, \
                     waiting {}",
                    coordinator.chain,
                    members.epoch,
                    names(&members.members),
                    names(members.learner.as_slice()),
                    names(&waiting),
                );
            }
            Ok(Turn::Forming { registered }) if registered != forming_said => {
                forming_said = registered;
                eprintln!(
                    "netmigrate coordinator: chain {}: {registered} of {} servers registered",
                    coordinator.chain, coordinator.replicas
                );
            }
            Ok(_) => {}
            Err(e) => complaints.note(&e),
        }
        std::thread::sleep(LOOK_EVERY);
    }
}

fn names(ids: &[super::ServerId]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    let names: Vec<String> = ids.iter().map(|id| id.addr.to_string()).collect();
    names.join(",")
}
