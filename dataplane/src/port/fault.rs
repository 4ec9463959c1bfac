//! Deterministic fault injection for the in-process backend: loss, duplication and
//! reordering drawn from a seeded generator, so a failing run can be replayed.

use super::Packet;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Probabilities (0.0–1.0) of each fault per packet sent.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultConfig {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub seed: u64,
}

impl FaultConfig {
    pub fn is_active(&self) -> bool {
        self.loss > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0
    }
}

/// What to do with one packet.
pub(crate) enum Fate {
    Deliver,
    Drop,
    Duplicate,
    Delay,
}

pub(crate) struct FaultInjector {
    config: FaultConfig,
    rng: fastrand::Rng,
    /// Held-back packets and when they may go; they overtake nothing sent earlier, and
    /// everything sent after them until the deadline overtakes them.
    delayed: VecDeque<(Instant, Box<Packet>)>,
}

impl FaultInjector {
    /// How long a reordered packet is held back.
    const DELAY: Duration = Duration::from_micros(300);

    pub fn new(config: FaultConfig, stream: u64) -> Self {
        FaultInjector {
            config,
            rng: fastrand::Rng::with_seed(config.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            delayed: VecDeque::new(),
        }
    }

    pub fn fate(&mut self) -> Fate {
        let draw = self.rng.f64();
        let c = &self.config;
        if draw < c.loss {
            Fate::Drop
        } else if draw < c.loss + c.duplicate {
            Fate::Duplicate
        } else if draw < c.loss + c.duplicate + c.reorder {
            Fate::Delay
        } else {
            Fate::Deliver
        }
    }

    pub fn delay(&mut self, packet: Box<Packet>) {
        self.delayed
            .push_back((Instant::now() + Self::DELAY, packet));
    }

    /// Packets whose hold-back time has passed.
    pub fn due(&mut self, now: Instant) -> impl Iterator<Item = Box<Packet>> + '_ {
        std::iter::from_fn(move || match self.delayed.front() {
            Some((at, _)) if *at <= now => self.delayed.pop_front().map(|(_, p)| p),
            _ => None,
        })
    }
}
