//! A reliable, ordered message stream over datagrams (go-back-N). Migration data and control
//! from a source core to a destination core, and group announcements to the switch, are
//! streams: every message is retransmitted until acknowledged, the receiver applies
//! messages strictly in order, and an acknowledgement names the last message *applied*.
//!
//! Every message of a stream carries the stream's id in the header's `client` field, and
//! acknowledgements echo it: a receiver tells a new migration between the same two cores
//! from retransmissions of an old one, and a sender ignores acks meant for another stream.

use dataplane::wire::{self, Flags, HeaderRepr, Op, Status};
use dataplane::Packet;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Retransmission timeout before the first round-trip sample; afterwards it follows the
/// measured round trip (RFC 6298), which grows with the peer's queue.
pub const RTO: Duration = Duration::from_millis(2);
const MIN_RTO: Duration = Duration::from_millis(1);
const MAX_RTO: Duration = Duration::from_millis(200);

struct Outstanding {
    seq: u64,
    datagram: Vec<u8>,
    sent_at: Option<Instant>,
    /// Karn's rule: a retransmitted message gives no round-trip sample.
    retransmitted: bool,
}

/// The sending end: queues messages, keeps up to `window` unacknowledged, retransmits them
/// all from the oldest when its timer expires.
pub struct StreamSender {
    peer: SocketAddrV4,
    id: u32,
    window: usize,
    next_seq: u64,
    queued: VecDeque<Outstanding>,
    in_flight: VecDeque<Outstanding>,
    /// When the oldest in-flight message was last (re)sent.
    timer_from: Option<Instant>,
    rto: Duration,
    /// Smoothed round trip and its variation, once sampled.
    srtt: Option<Duration>,
    rttvar: Duration,
    last_acked: Option<u64>,
    /// Acknowledgements that repeated the last one while messages were in flight: the
    /// receiver is dropping what follows a lost message.
    duplicate_acks: u32,
    fast_retransmit: bool,
    last_fast_retransmit: Option<Instant>,
    /// After a resend of the window, repeated acks are echoes of the resent copies, not
    /// news of a loss, until the ack passes this sequence number (NewReno's recovery point).
    recover: Option<u64>,
    pub retransmissions: u64,
    pub bytes_sent: u64,
}

impl StreamSender {
    pub fn new(peer: SocketAddrV4, window: usize, id: u32) -> Self {
        StreamSender {
            peer,
            id,
            window: window.max(1),
            next_seq: 0,
            queued: VecDeque::new(),
            in_flight: VecDeque::new(),
            timer_from: None,
            rto: RTO,
            srtt: None,
            rttvar: Duration::ZERO,
            last_acked: None,
            duplicate_acks: 0,
            fast_retransmit: false,
            last_fast_retransmit: None,
            recover: None,
            retransmissions: 0,
            bytes_sent: 0,
        }
    }

    pub fn peer(&self) -> SocketAddrV4 {
        self.peer
    }

    /// The stream goes on to `peer`, a successor of the old one that holds everything the
    /// old one acknowledged and its INIT (seq 0): what is not acknowledged yet is sent to
    /// it again, renumbered from seq 1, and so is everything pushed from now on.
    /// (`keep_unacknowledged` false: the unacknowledged messages are dropped instead.)
    pub fn redirect(&mut self, peer: SocketAddrV4, keep_unacknowledged: bool) {
        let mut fresh = StreamSender::new(peer, self.window, self.id);
        fresh.next_seq = 1;
        fresh.last_acked = Some(0);
        fresh.retransmissions = self.retransmissions;
        fresh.bytes_sent = self.bytes_sent;
        let unacknowledged = self.in_flight.drain(..).chain(self.queued.drain(..));
        for mut message in unacknowledged.filter(|_| keep_unacknowledged) {
            message.seq = fresh.next_seq;
            fresh.next_seq += 1;
            let mut header = wire::Header::new_checked(&mut message.datagram[..])
                .expect("a datagram this sender built");
            header.set_seq(message.seq);
            message.sent_at = None;
            message.retransmitted = false;
            fresh.queued.push_back(message);
        }
        *self = fresh;
    }

    /// Whether an acknowledgement with this header belongs to this stream.
    pub fn owns_ack(&self, from: SocketAddrV4, ack: &HeaderRepr) -> bool {
        from == self.peer && ack.client == self.id
    }

    /// Queues a message; returns its sequence number. `body` writes the body into the
    /// buffer it is given and returns the length.
    pub fn push(
        &mut self,
        op: Op,
        shard: u16,
        body: impl FnOnce(&mut [u8]) -> Result<usize, wire::WireError>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let header = HeaderRepr {
            op,
            flags: Flags::default(),
            status: Status::Ok,
            shard,
            seq,
            key_hash: 0,
            client: self.id,
            oldest_gap: 0,
        };
        let mut datagram = vec![0; wire::MAX_PAYLOAD];
        let len = wire::emit_with(&header, &mut datagram, body)
            .expect("migration messages are built to fit one frame");
        datagram.truncate(len);
        self.queued.push_back(Outstanding {
            seq,
            datagram,
            sent_at: None,
            retransmitted: false,
        });
        seq
    }

    /// Everything up to and including `seq` was applied by the peer.
    pub fn on_ack(&mut self, seq: u64, now: Instant) {
        if seq >= self.next_seq || self.last_acked.is_some_and(|last| seq < last) {
            return;
        }
        if self.last_acked == Some(seq) {
            if self.recover.is_some_and(|recover| seq < recover) {
                return;
            }
            // A repeat: after two, resend from the gap at once (at most once a round
            // trip) instead of waiting for the timer.
            self.duplicate_acks += 1;
            let round_trip = self.srtt.unwrap_or(RTO);
            let due = self
                .last_fast_retransmit
                .is_none_or(|at| now.saturating_duration_since(at) >= round_trip);
            if self.duplicate_acks >= 2 && !self.in_flight.is_empty() && due {
                self.fast_retransmit = true;
                self.last_fast_retransmit = Some(now);
                self.duplicate_acks = 0;
            }
            return;
        }
        self.duplicate_acks = 0;
        if self.recover.is_some_and(|recover| seq >= recover) {
            self.recover = None;
        }
        self.last_acked = Some(seq);
        let before = self.in_flight.len();
        let mut sample = None;
        while self.in_flight.front().is_some_and(|m| m.seq <= seq) {
            let message = self.in_flight.pop_front().expect("front");
            if let (false, Some(sent)) = (message.retransmitted, message.sent_at) {
                sample = Some(now.saturating_duration_since(sent));
            }
        }
        if let Some(rtt) = sample {
            self.observe_rtt(rtt);
        } else if let Some(srtt) = self.srtt {
            // Progress through retransmitted messages: undo the timer's backoff.
            self.rto = (srtt + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO);
        }
        if self.in_flight.len() != before {
            self.timer_from = (!self.in_flight.is_empty()).then_some(now);
        }
    }

    /// RFC 6298: srtt ← 7/8 srtt + 1/8 r, rttvar ← 3/4 rttvar + 1/4 |srtt − r|,
    /// rto = srtt + 4 rttvar.
    fn observe_rtt(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.expect("just set");
        self.rto = (srtt + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO);
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// The sequence number the next pushed message gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether the peer has applied message `seq`.
    pub fn is_acked(&self, seq: u64) -> bool {
        self.last_acked.is_some_and(|last| last >= seq)
    }

    /// Messages not yet acknowledged (queued or in flight).
    pub fn pending(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }

    /// Sends what the window allows and retransmits on timeout.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Box<Packet>>) {
        if let Some(since) = self.timer_from {
            let fast = std::mem::take(&mut self.fast_retransmit);
            if fast || now.duration_since(since) >= self.rto {
                self.recover = self.in_flight.back().map(|m| m.seq);
                for message in &mut self.in_flight {
                    message.retransmitted = true;
                    out.push(datagram_packet(self.peer, &message.datagram));
                    self.retransmissions += 1;
                    self.bytes_sent += message.datagram.len() as u64;
                }
                if !fast {
                    self.rto = (self.rto * 2).min(MAX_RTO);
                }
                self.timer_from = Some(now);
            }
        }
        while self.in_flight.len() < self.window {
            let Some(mut message) = self.queued.pop_front() else {
                break;
            };
            message.sent_at = Some(now);
            out.push(datagram_packet(self.peer, &message.datagram));
            self.bytes_sent += message.datagram.len() as u64;
            if self.in_flight.is_empty() {
                self.timer_from = Some(now);
            }
            self.in_flight.push_back(message);
        }
    }
}

fn datagram_packet(peer: SocketAddrV4, datagram: &[u8]) -> Box<Packet> {
    let mut packet = Packet::new_boxed();
    packet.buffer_mut()[..datagram.len()].copy_from_slice(datagram);
    packet.set_len(datagram.len());
    packet.dst = peer;
    packet
}

/// What the receiver does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The next message in order: apply it, then call `applied`.
    Apply,
    /// Applied before: acknowledge again, do nothing else.
    Duplicate,
    /// A message after a gap: hold it (`hold`) until the gap is filled; the sender
    /// resends from the gap.
    Gap,
}

/// Messages past a gap a receiver holds: a network that reorders a window's messages
/// still makes progress by a whole window per round trip, not by one message per timeout.
pub const REORDER_WINDOW: u64 = 64;

/// The receiving end: the next sequence number to apply, and messages that came early.
#[derive(Default)]
pub struct StreamReceiver {
    expected: u64,
    held: VecDeque<(u64, Box<Packet>)>,
}

impl StreamReceiver {
    /// A receiver of a stream whose INIT (seq 0) was applied elsewhere: a successor that
    /// took over a migration in holds INIT's effects in its records.
    pub fn after_init() -> Self {
        StreamReceiver {
            expected: 1,
            held: VecDeque::new(),
        }
    }

    pub fn classify(&self, seq: u64) -> Delivery {
        match seq.cmp(&self.expected) {
            std::cmp::Ordering::Equal => Delivery::Apply,
            std::cmp::Ordering::Less => Delivery::Duplicate,
            std::cmp::Ordering::Greater => Delivery::Gap,
        }
    }

    pub fn applied(&mut self) {
        self.expected += 1;
    }

    /// Keeps a copy of a message that came after a gap, if it lies within the reorder
    /// window and is not held already; anything else is dropped (the sender resends it).
    pub fn hold(&mut self, seq: u64, packet: &Packet) {
        let within = seq > self.expected && seq - self.expected < REORDER_WINDOW;
        if within && !self.held.iter().any(|(held, _)| *held == seq) {
            self.held.push_back((seq, packet.duplicate()));
        }
    }

    /// The held message that is next in order, if there is one (held messages that fell
    /// behind are let go).
    pub fn take_next(&mut self) -> Option<Box<Packet>> {
        let expected = self.expected;
        self.held.retain(|(seq, _)| *seq >= expected);
        let at = self.held.iter().position(|(seq, _)| *seq == expected)?;
        self.held.swap_remove_back(at).map(|(_, packet)| packet)
    }

    /// The sequence number an acknowledgement carries, if anything was applied yet.
    pub fn last_applied(&self) -> Option<u64> {
        self.expected.checked_sub(1)
    }
}

/// Builds the acknowledgement of a stream message into `packet` (turned around in place).
/// Its key-hash field carries the receiver's `incarnation`.
pub fn acknowledge(
    packet: &mut Packet,
    request: &HeaderRepr,
    last_applied: u64,
    status: Status,
    incarnation: u64,
) {
    let header = HeaderRepr {
        op: request.op.reply(),
        flags: Flags::default(),
        status,
        seq: last_applied,
        key_hash: incarnation,
        ..*request
    };
    let len = wire::emit_with(&header, packet.buffer_mut(), |_| Ok(0)).expect("an ack fits");
    packet.set_len(len);
    packet.swap_addresses();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn peer() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 3), 7100)
    }

    #[test]
    fn window_limits_in_flight_and_acks_release_it() {
        let now = Instant::now();
        let mut sender = StreamSender::new(peer(), 2, 1);
        for _ in 0..5 {
            sender.push(Op::Terminate, 1, |_| Ok(0));
        }
        let mut out = Vec::new();
        sender.poll(now, &mut out);
        assert_eq!(out.len(), 2);
        sender.on_ack(0, now);
        out.clear();
        sender.poll(now, &mut out);
        assert_eq!(out.len(), 1, "one slot freed");
        assert!(sender.is_acked(0) && !sender.is_acked(1));
        sender.on_ack(1, now); // an old, repeated or reordered ack changes nothing after this
        sender.on_ack(0, now);
        assert!(sender.is_acked(1));
        assert_eq!(sender.pending(), 3);
    }

    #[test]
    fn timeout_retransmits_everything_in_flight_with_backoff() {
        let now = Instant::now();
        let mut sender = StreamSender::new(peer(), 4, 1);
        for _ in 0..3 {
            sender.push(Op::Terminate, 1, |_| Ok(0));
        }
        let mut out = Vec::new();
        sender.poll(now, &mut out);
        out.clear();
        sender.poll(now + RTO / 2, &mut out);
        assert!(out.is_empty());
        sender.poll(now + RTO, &mut out);
        assert_eq!(out.len(), 3);
        out.clear();
        sender.poll(now + RTO * 2, &mut out);
        assert!(out.is_empty(), "the timeout doubled");
        sender.poll(now + RTO * 3, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(sender.retransmissions, 6);
    }

    #[test]
    fn repeated_acks_resend_from_the_gap_without_waiting() {
        let now = Instant::now();
        let mut sender = StreamSender::new(peer(), 8, 1);
        for _ in 0..4 {
            sender.push(Op::Terminate, 1, |_| Ok(0));
        }
        let mut out = Vec::new();
        sender.poll(now, &mut out);
        out.clear();
        // Message 1 was lost: the receiver acknowledges 0 for 0, 2 and 3.
        for _ in 0..3 {
            sender.on_ack(0, now);
        }
        sender.poll(now, &mut out);
        assert_eq!(out.len(), 3, "1, 2 and 3 resent before any timeout");
        out.clear();
        // The resent copies of 2 and 3 echo acks of 0 again: not a new loss.
        let soon = now + Duration::from_micros(100);
        for _ in 0..4 {
            sender.on_ack(0, soon);
        }
        sender.poll(soon, &mut out);
        assert!(out.is_empty(), "no resend storm from echoes");
    }

    #[test]
    fn timeout_follows_the_measured_round_trip() {
        let now = Instant::now();
        let mut sender = StreamSender::new(peer(), 8, 1);
        let rtt = Duration::from_millis(20);
        let mut out = Vec::new();
        for i in 0..20u64 {
            let at = now + rtt * i as u32;
            sender.push(Op::Terminate, 1, |_| Ok(0));
            sender.poll(at, &mut out);
            sender.on_ack(i, at + rtt);
        }
        // A steady 20 ms round trip: the timeout sits above it, so no spurious resends.
        assert!(
            sender.rto() >= rtt && sender.rto() < rtt * 3,
            "{:?}",
            sender.rto()
        );
        assert_eq!(sender.retransmissions, 0);
    }

    #[test]
    fn receiver_applies_in_order_only() {
        let mut receiver = StreamReceiver::default();
        assert_eq!(receiver.last_applied(), None);
        assert_eq!(receiver.classify(1), Delivery::Gap);
        assert_eq!(receiver.classify(0), Delivery::Apply);
        receiver.applied();
        assert_eq!(receiver.classify(0), Delivery::Duplicate);
        assert_eq!(receiver.last_applied(), Some(0));
    }

    /// Messages past a gap are held (once each, within the window) and handed out in
    /// order once the gap is filled.
    #[test]
    fn receiver_holds_what_comes_early() {
        let mut receiver = StreamReceiver::default();
        let message = |seq: u8| {
            let mut packet = Packet::new_boxed();
            packet.buffer_mut()[0] = seq;
            packet.set_len(1);
            packet
        };
        for seq in [3u8, 1, 2, 1, 200] {
            receiver.hold(u64::from(seq), &message(seq));
        }
        assert!(receiver.take_next().is_none(), "0 has not come");
        receiver.applied(); // 0
        for want in 1..=3u8 {
            let next = receiver.take_next().expect("held");
            assert_eq!(next.payload(), [want]);
            receiver.applied();
        }
        assert!(receiver.take_next().is_none(), "200 was past the window");
    }
}
