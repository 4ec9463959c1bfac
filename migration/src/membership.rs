//! Who replicates a chain, by chain replication's rules (sans-I/O): the coordinator's
//! decisions, shared by the simulator's coordinator and `netmigrate coordinator` (which keeps
//! this state in etcd). A failed head is replaced by its successor, a failed tail by its
//! predecessor, a failed middle replica is spliced out; a replica that (re)starts waits, then
//! copies the chain's state as its learner, then joins as the tail. Every change takes a new
//! epoch (`chain::ChainConfig`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::chain::Place;

/// One chain's membership. `M` names a replica process (the simulator's index, or a
/// server's address and incarnation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership<M> {
    pub epoch: u32,
    /// Head first, tail last.
    pub members: Vec<M>,
    /// A replica copying the chain's state before it joins as the tail.
    pub learner: Option<M>,
    /// Replicas that (re)started and wait for their turn as learner.
    pub waiting: VecDeque<M>,
}

impl<M: Clone + PartialEq> Membership<M> {
    /// A chain of `members`, all starting empty (or all from the same state).
    pub fn new(members: Vec<M>) -> Self {
        assert!(!members.is_empty(), "a chain has a member");
        Membership {
            epoch: 1,
            members,
            learner: None,
            waiting: VecDeque::new(),
        }
    }

    pub fn head(&self) -> &M {
        &self.members[0]
    }

    pub fn tail(&self) -> &M {
        self.members.last().expect("a chain has a member")
    }

    /// Every replica the membership names: members, learner, waiting.
    pub fn named(&self) -> impl Iterator<Item = &M> {
        let learner = self.learner.iter();
        self.members
            .iter()
            .chain(learner)
            .chain(self.waiting.iter())
    }

    /// The last member, which died, is back as `back` with the chain's state (from its own
    /// log): it takes its place again, in a new epoch.
    pub fn reinstate_last(&mut self, back: M) {
        assert_eq!(
            self.members.len(),
            1,
            "only a chain's last member is reinstated"
        );
        self.members[0] = back;
        self.epoch += 1;
    }

    /// Where `replica` is in this chain (`Outside`: waiting, or not named).
    pub fn place_of(&self, replica: &M) -> Place {
        match self.members.iter().position(|m| m == replica) {
            Some(0) => Place::Head,
            Some(i) if i + 1 == self.members.len() => Place::Tail,
            Some(_) => Place::Middle,
            None if self.learner.as_ref() == Some(replica) => Place::Learner,
            None => Place::Outside,
        }
    }

    /// Whether the chain can lose `replica`: a learner, or a member of a chain of two or
    /// more. The last member stays: with no one to copy from, only its own log can bring
    /// the chain's state back.
    pub fn can_lose(&self, replica: &M) -> bool {
        match self.place_of(replica) {
            Place::Learner => true,
            Place::Outside => false,
            _ => self.members.len() > 1,
        }
    }

    /// `replica` failed: it leaves the chain (its successor heads the chain, its
    /// predecessor is the tail, or its neighbours are spliced) or stops waiting. Returns its
    /// place when the configuration changed.
    pub fn fail(&mut self, replica: &M) -> Option<Place> {
        self.waiting.retain(|m| m != replica);
        if !self.can_lose(replica) {
            return None;
        }
        let place = self.place_of(replica);
        self.members.retain(|m| m != replica);
        if self.learner.as_ref() == Some(replica) {
            self.learner = None;
        }
        self.epoch += 1;
        Some(place)
    }

    /// `replica` (re)started empty and asks to serve: it waits for its turn as learner
    /// (nothing changes for one already in the chain or waiting).
    pub fn join(&mut self, replica: M) {
        let known = self.place_of(&replica) != Place::Outside || self.waiting.contains(&replica);
        if !known {
            self.waiting.push_back(replica);
        }
    }

    /// The first waiting replica becomes the learner when there is none: true when the
    /// configuration changed.
    pub fn admit_learner(&mut self) -> bool {
        if self.learner.is_some() {
            return false;
        }
        let Some(next) = self.waiting.pop_front() else {
            return false;
        };
        self.learner = Some(next);
        self.epoch += 1;
        true
    }

    /// The tail of `epoch` reports that its learner holds everything it holds: the learner
    /// becomes the tail. A report of an older epoch is stale (the chain changed since, and
    /// the learner may be copying again): ignored. True when the configuration changed.
    pub fn promote_learner(&mut self, epoch: u32) -> bool {
        if epoch != self.epoch {
            return false;
        }
        let Some(learner) = self.learner.take() else {
            return false;
        };
        self.members.push(learner);
        self.epoch += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_head_is_replaced_by_its_successor_and_a_tail_by_its_predecessor() {
        let mut chain = Membership::new(vec![1, 2, 3]);
        assert_eq!(chain.fail(&1), Some(Place::Head));
        assert_eq!((chain.members.clone(), chain.epoch), (vec![2, 3], 2));
        assert_eq!(chain.fail(&3), Some(Place::Tail));
        assert_eq!(chain.members, vec![2]);
        assert_eq!(chain.fail(&2), None, "the last member stays");
        assert_eq!(chain.epoch, 3);
    }

    #[test]
    fn a_middle_replica_is_spliced_out() {
        let mut chain = Membership::new(vec![1, 2, 3]);
        assert_eq!(chain.fail(&2), Some(Place::Middle));
        assert_eq!(chain.members, vec![1, 3]);
        assert_eq!(chain.fail(&9), None, "a stranger changes nothing");
        assert_eq!(chain.epoch, 2);
    }

    #[test]
    fn a_restarted_replica_waits_learns_and_joins_as_tail() {
        let mut chain = Membership::new(vec![1, 2, 3]);
        chain.fail(&1);
        chain.fail(&3);
        chain.join(1);
        chain.join(3);
        chain.join(3);
        assert_eq!(chain.waiting.len(), 2);
        assert!(chain.admit_learner());
        assert!(!chain.admit_learner(), "one learner at a time");
        assert_eq!(chain.place_of(&1), Place::Learner);
        let epoch = chain.epoch;
        assert!(!chain.promote_learner(epoch - 1), "a stale report");
        assert!(chain.promote_learner(epoch));
        assert_eq!(chain.members, vec![2, 1]);
        assert!(chain.admit_learner());
        assert_eq!(chain.learner, Some(3));
    }

    #[test]
    fn a_failed_learner_leaves_and_the_next_one_is_admitted() {
        let mut chain = Membership::new(vec![1]);
        chain.join(2);
        chain.join(3);
        chain.admit_learner();
        assert_eq!(chain.fail(&2), Some(Place::Learner));
        assert_eq!(chain.learner, None);
        assert!(chain.admit_learner());
        assert_eq!(chain.learner, Some(3));
        chain.join(4);
        chain.fail(&4);
        assert!(
            chain.waiting.is_empty(),
            "a failed waiting replica stops waiting"
        );
    }
}
