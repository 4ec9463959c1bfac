//! The simulated network: every datagram goes from its host to the switch and from the
//! switch to its destination, each hop after a random delay (so datagrams overtake each
//! other), and may be lost or duplicated; a host cut off from the switch (a partition)
//! neither sends nor receives. Everything is drawn from the run's seed.

use dataplane::Packet;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;

/// What the network does to datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a hop loses a datagram.
    pub loss: f64,
    /// Probability that a hop delivers a datagram twice (each copy with its own delay).
    pub duplicate: f64,
    /// A hop takes this many nanoseconds, plus up to `jitter_ns` more.
    pub delay_ns: u64,
    pub jitter_ns: u64,
}

/// Where a datagram in flight goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// To the switch, which processes it.
    ToSwitch,
    /// To the host at the datagram's destination address.
    ToHost,
}

struct InFlight {
    hop: Hop,
    packet: Box<Packet>,
}

pub struct Network {
    faults: Faults,
    rng: fastrand::Rng,
    /// (arrival time, order of sending) → index into `slots`.
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    sent: u64,
    /// Hosts cut off from the switch, until when.
    cut_off: Vec<(Ipv4Addr, u64)>,
    pub lost: u64,
    pub duplicated: u64,
    pub partitioned: u64,
}

impl Network {
    pub fn new(faults: Faults, seed: u64) -> Network {
        Network {
            faults,
            rng: fastrand::Rng::with_seed(seed),
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            sent: 0,
            cut_off: Vec::new(),
            lost: 0,
            duplicated: 0,
            partitioned: 0,
        }
    }

    /// Cuts `host` off from the switch until `until`.
    pub fn cut_off(&mut self, host: Ipv4Addr, until: u64) {
        self.cut_off.push((host, until));
    }

    fn is_cut_off(&mut self, host: Ipv4Addr, now: u64) -> bool {
        self.cut_off.retain(|&(_, until)| until > now);
        self.cut_off.iter().any(|&(h, _)| h == host)
    }

    /// Sends `packet` on its `hop` at `now`: lost, delayed, or delivered twice.
    pub fn send(&mut self, now: u64, hop: Hop, packet: Box<Packet>) {
        let host = match hop {
            Hop::ToSwitch => *packet.src.ip(),
            Hop::ToHost => *packet.dst.ip(),
        };
        if self.is_cut_off(host, now) {
            self.partitioned += 1;
            return;
        }
        if self.rng.f64() < self.faults.loss {
            self.lost += 1;
            return;
        }
        if self.rng.f64() < self.faults.duplicate {
            self.duplicated += 1;
            let copy = packet.duplicate();
            self.enqueue(now, hop, copy);
        }
        self.enqueue(now, hop, packet);
    }

    fn enqueue(&mut self, now: u64, hop: Hop, packet: Box<Packet>) {
        let at = now + self.faults.delay_ns + self.rng.u64(0..=self.faults.jitter_ns);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(InFlight { hop, packet });
                slot
            }
            None => {
                self.slots.push(Some(InFlight { hop, packet }));
                self.slots.len() - 1
            }
        };
        self.sent += 1;
        self.queue.push(Reverse((at, self.sent, slot)));
    }

    /// When the next datagram arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next datagram due at `now`, with its hop.
    pub fn arrive(&mut self, now: u64) -> Option<(Hop, Box<Packet>)> {
        let &Reverse((at, _, slot)) = self.queue.peek()?;
        if at > now {
            return None;
        }
        self.queue.pop();
        self.free.push(slot);
        let flight = self.slots[slot].take().expect("a queued slot is full");
        Some((flight.hop, flight.packet))
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
