//! The software switch's pipeline: the same tables, registers, hashes and decisions as the
//! P4 program (`docs/switch.md`), as a sans-I/O function from a packet to the packets it
//! becomes. The run loop (`run.rs`) moves packets between it and a port.

use crate::spec::{self, HASHES, MAX_PAIRS, MAX_PARTITIONS, RETIRED_STREAMS};
use dataplane::wire::{self, Flags, Header, HeaderRepr, Op, Status, SwitchControl, HEADER_LEN};
use dataplane::Packet;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchConfig {
    /// The switch's own address: control messages are sent here.
    pub address: SocketAddrV4,
    /// Bloom-filter cells per array (power of two).
    pub bf_cells: usize,
    /// Counting-Bloom-filter cells per array (power of two).
    pub cbf_cells: usize,
}

impl SwitchConfig {
    pub fn new(address: SocketAddrV4, group_bits: u8) -> Self {
        SwitchConfig {
            address,
            bf_cells: spec::default_bf_cells(group_bits),
            cbf_cells: spec::DEFAULT_CBF_CELLS,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, cells) in [("bf-cells", self.bf_cells), ("cbf-cells", self.cbf_cells)] {
            if !cells.is_power_of_two() || !(16..=spec::MAX_BF_CELLS).contains(&cells) {
                return Err(format!(
                    "--{name} must be a power of two in 16..={}, got {cells}",
                    spec::MAX_BF_CELLS
                ));
            }
        }
        Ok(())
    }
}

/// One `nm_pair` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub slot: usize,
    pub source_ip: Ipv4Addr,
    pub source_shard: u16,
    pub dest_ip: Ipv4Addr,
    pub dest_shard: u16,
    pub size_exp: u8,
    pub remain_exp: u8,
    pub partitions: u16,
    /// The migration's stream id (the `client` field of its control messages): messages
    /// of another migration of the same shard never touch this pair.
    pub stream: u32,
    joined: u64,
    terminated: u64,
}

/// What the pipeline does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// S4: no pair (or not a steerable request): forward by IPv4 destination.
    Forward,
    /// S1: the group has not started: to the source, unchanged.
    Source,
    /// S2, reads: to the source and a redirected copy to the destination.
    DoubleRead,
    /// S2 writes and S3: to the destination.
    Redirect,
}

/// Counters of every decision (`docs/switch.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SwitchCounters {
    pub forwarded: u64,
    pub to_source: u64,
    pub double_reads: u64,
    pub redirects: u64,
    /// Multi-key requests whose keys went to both servers (not all as a double read).
    pub multi_splits: u64,
    /// Decisions "in flight" for a group that was not (a counting-filter false positive).
    pub false_in_flight: u64,
    /// Decisions "done" for a group that was not (a Bloom-filter false positive).
    pub false_done: u64,
    /// Applied `SWITCH_GROUP_START`s that saturated a counting-filter cell (brought it to
    /// `spec::CBF_SATURATED`): from then on that cell reads "in flight" until the pair's
    /// registers are cleared.
    pub cbf_saturated: u64,
    pub control_applied: u64,
    pub control_duplicates: u64,
    pub control_gaps: u64,
    pub control_errors: u64,
    pub pairs_installed: u64,
    pub pairs_removed: u64,
    pub malformed: u64,
}

/// A readable copy of the switch state for the control API and reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwitchSnapshot {
    pub counters: SwitchCounters,
    pub pairs: Vec<PairSnapshot>,
    pub bf_cells: usize,
    pub cbf_cells: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PairSnapshot {
    pub slot: usize,
    pub source: String,
    pub destination: String,
    pub partitions: u16,
    pub groups_done: u64,
    pub groups_in_flight: u64,
    /// Bloom cells set per array, and the resulting false-"done" rate for a group that
    /// has not started.
    pub bf_cells_set: [u64; HASHES],
    pub false_done_rate: f64,
}

/// The exact state of a group, kept beside the filters only to count false positives.
#[derive(Debug, Clone, Copy, Default)]
struct Truth {
    in_flight: u32,
    done: bool,
}

pub struct Switch {
    config: SwitchConfig,
    pairs: [Option<Pair>; MAX_PAIRS],
    bloom: [Vec<u8>; HASHES],
    counting: [Vec<u8>; HASHES],
    expected_seq: Vec<u32>,
    /// The last `RETIRED_STREAMS` finished migrations: (source address, shard, stream).
    retired: VecDeque<(Ipv4Addr, u16, u32)>,
    truth: HashMap<(usize, u32), Truth>,
    counters: SwitchCounters,
}

impl Switch {
    pub fn new(config: SwitchConfig) -> Self {
        Switch {
            pairs: [None; MAX_PAIRS],
            bloom: std::array::from_fn(|_| vec![0; MAX_PAIRS * config.bf_cells]),
            counting: std::array::from_fn(|_| vec![0; MAX_PAIRS * config.cbf_cells]),
            expected_seq: vec![0; MAX_PAIRS * MAX_PARTITIONS],
            retired: VecDeque::with_capacity(RETIRED_STREAMS),
            truth: HashMap::new(),
            counters: SwitchCounters::default(),
            config,
        }
    }

    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    pub fn counters(&self) -> SwitchCounters {
        self.counters
    }

    pub fn pairs(&self) -> impl Iterator<Item = &Pair> {
        self.pairs.iter().flatten()
    }

    /// Processes one packet; what it becomes (zero, one or two packets) goes to `out`, and
    /// a packet that is dropped goes to `dropped` so its buffer can be reused.
    pub fn process(
        &mut self,
        mut packet: Box<Packet>,
        out: &mut Vec<Box<Packet>>,
        dropped: &mut Vec<Box<Packet>>,
    ) {
        if packet.dst == self.config.address {
            if self.control(&mut packet) {
                out.push(packet);
            } else {
                dropped.push(packet);
            }
            return;
        }
        let Ok((header, _)) = wire::parse_header(packet.payload()) else {
            // Not ours (or not well formed): a switch routes it by address.
            self.counters.forwarded += 1;
            out.push(packet);
            return;
        };
        if !header.op.is_key_addressed() || header.flags.contains(Flags::FORWARDED) {
            self.counters.forwarded += 1;
            out.push(packet);
            return;
        }
        if header.op.is_multi() {
            self.steer_multi(packet, &header, out);
            return;
        }
        let (decision, pair) =
            self.decide(*packet.dst.ip(), header.shard, header.key_hash, header.op);
        match (decision, pair) {
            (Decision::Forward, _) | (_, None) => {
                self.counters.forwarded += 1;
                out.push(packet);
            }
            (Decision::Source, _) => {
                self.counters.to_source += 1;
                out.push(packet);
            }
            (Decision::Redirect, Some(pair)) => {
                self.counters.redirects += 1;
                redirect(&mut packet, &header, &pair);
                out.push(packet);
            }
            (Decision::DoubleRead, Some(pair)) => {
                self.counters.double_reads += 1;
                let mut marked = header;
                marked.flags = header.flags.with(Flags::DOUBLE_READ);
                marked.emit(&mut Header::new_unchecked(
                    &mut packet.buffer_mut()[..HEADER_LEN],
                ));
                let mut copy = packet.duplicate();
                redirect(&mut copy, &marked, &pair);
                out.push(packet);
                out.push(copy);
            }
        }
    }

    /// A multi-key request is decided key by key: the keys the source serves go to the
    /// source, the others to the destination, and the keys of a double read to both, each
    /// copy with its `serve` and `halves` masks. The servers answer their items and the
    /// client merges the answers.
    fn steer_multi(
        &mut self,
        mut packet: Box<Packet>,
        header: &HeaderRepr,
        out: &mut Vec<Box<Packet>>,
    ) {
        let dst = *packet.dst.ip();
        let (Ok(route), Some(pair)) = (
            wire::MultiRoute::read(packet.payload()),
            self.lookup(dst, header.shard),
        ) else {
            // No pair, or malformed (the server counts and drops it): routed by address.
            self.counters.forwarded += 1;
            out.push(packet);
            return;
        };
        let (mut to_source, mut to_dest, mut double) = (0u16, 0u16, 0u16);
        for (i, key_hash) in route.selected() {
            match self.decide_for(&pair, key_hash, header.op) {
                Decision::Forward | Decision::Source => to_source |= 1 << i,
                Decision::Redirect => to_dest |= 1 << i,
                Decision::DoubleRead => double |= 1 << i,
            }
        }
        if to_dest == 0 && double == 0 {
            self.counters.to_source += 1;
            out.push(packet);
            return;
        }
        let mut marked = *header;
        if double != 0 {
            marked.flags = header.flags.with(Flags::DOUBLE_READ);
            marked.emit(&mut Header::new_unchecked(
                &mut packet.buffer_mut()[..HEADER_LEN],
            ));
        }
        let halves = route.halves | double;
        if to_source == 0 && double == 0 {
            self.counters.redirects += 1;
        } else {
            if to_source == 0 && to_dest == 0 {
                self.counters.double_reads += 1;
            } else {
                self.counters.multi_splits += 1;
            }
            let mut copy = packet.duplicate();
            let serve = to_source | double;
            wire::MultiRoute::write_selection(copy.buffer_mut(), serve, halves & serve);
            out.push(copy);
        }
        let serve = to_dest | double;
        wire::MultiRoute::write_selection(packet.buffer_mut(), serve, halves & serve);
        redirect(&mut packet, &marked, &pair);
        out.push(packet);
    }

    /// The decision for a request to `dst` / `shard` with this key hash (S1–S4).
    pub fn decide(
        &mut self,
        dst: Ipv4Addr,
        shard: u16,
        key_hash: u64,
        op: Op,
    ) -> (Decision, Option<Pair>) {
        match self.lookup(dst, shard) {
            Some(pair) => (self.decide_for(&pair, key_hash, op), Some(pair)),
            None => (Decision::Forward, None),
        }
    }

    /// The decision for a key of `pair` (S1–S3).
    fn decide_for(&mut self, pair: &Pair, key_hash: u64, op: Op) -> Decision {
        let group = spec::group_of(key_hash, pair.size_exp, pair.remain_exp);
        let cells = self.cells(pair, group);
        let in_flight = (0..HASHES).all(|i| self.counting[i][cells.counting[i]] != 0);
        let done = (0..HASHES).all(|i| self.bloom[i][cells.bloom[i]] != 0);
        if in_flight || done {
            // Only a positive can be false: the exact state is looked up just for those.
            let truth = self
                .truth
                .get(&(pair.slot, group))
                .copied()
                .unwrap_or_default();
            if in_flight && truth.in_flight == 0 {
                self.counters.false_in_flight += 1;
            }
            if !in_flight && done && !truth.done {
                self.counters.false_done += 1;
            }
        }
        let is_read = matches!(op, Op::Get | Op::MultiGet);
        match (in_flight, done) {
            (true, _) if is_read => Decision::DoubleRead,
            (true, _) | (false, true) => Decision::Redirect,
            (false, false) => Decision::Source,
        }
    }

    fn lookup(&self, ip: Ipv4Addr, shard: u16) -> Option<Pair> {
        self.pairs
            .iter()
            .flatten()
            .find(|p| p.source_ip == ip && p.source_shard == shard)
            .copied()
    }

    fn cells(&self, pair: &Pair, group: u32) -> Cells {
        let hashes = spec::filter_hashes(pair.dest_ip, pair.dest_shard, group);
        Cells {
            bloom: std::array::from_fn(|i| {
                pair.slot * self.config.bf_cells + (hashes[i] as usize & (self.config.bf_cells - 1))
            }),
            counting: std::array::from_fn(|i| {
                pair.slot * self.config.cbf_cells
                    + (hashes[i] as usize & (self.config.cbf_cells - 1))
            }),
        }
    }

    /// Handles a control message in place; true when the buffer now holds the reply.
    fn control(&mut self, packet: &mut Packet) -> bool {
        let parsed = wire::parse_header(packet.payload()).and_then(|(header, body)| {
            if !header.op.is_switch_control() {
                return Err(wire::WireError::UnexpectedOp(header.op as u8));
            }
            Ok((header, SwitchControl::parse(header.op, body)?))
        });
        let Ok((header, message)) = parsed else {
            self.counters.malformed += 1;
            return false;
        };
        let (status, last_applied) = self.apply_control(&header, &message);
        if status != Status::Ok {
            self.counters.control_errors += 1;
        }
        let reply = HeaderRepr {
            op: header.op.reply(),
            flags: Flags::default(),
            status,
            seq: last_applied,
            ..header
        };
        let len = wire::emit_with(&reply, packet.buffer_mut(), |_| Ok(0)).expect("an ack fits");
        packet.set_len(len);
        packet.swap_addresses();
        true
    }

    /// Returns the status and the last sequence number applied for the sender's stream.
    fn apply_control(&mut self, header: &HeaderRepr, message: &SwitchControl) -> (Status, u64) {
        let partition = message.partition() as usize;
        if partition >= MAX_PARTITIONS {
            return (Status::Error, header.seq);
        }
        if let SwitchControl::Init { .. } = message {
            return self.apply_init(header, message);
        }
        let (source_ip, stream) = (message.source_ip(), header.client);
        let Some(pair) = self.lookup(source_ip, header.shard) else {
            return match message {
                SwitchControl::Terminate { .. } => {
                    // A repeat after the pair was removed, or the end of a migration whose
                    // INIT the switch refused: either way nothing to forget. Remembered,
                    // so that a late copy of its INIT does not install the pair.
                    self.retire(source_ip, header.shard, stream);
                    (Status::Ok, header.seq)
                }
                _ => (Status::Error, header.seq),
            };
        };
        if pair.stream != stream || partition >= usize::from(pair.partitions) {
            return match message {
                // The end of another migration of this shard: a late copy of an earlier
                // one's, or one whose INIT this pair's made the switch refuse. Either way
                // it holds nothing here, and is retired like any finished migration.
                SwitchControl::Terminate { .. } if pair.stream != stream => {
                    self.counters.control_duplicates += 1;
                    self.retire(source_ip, header.shard, stream);
                    (Status::Ok, header.seq)
                }
                _ => (Status::Error, header.seq),
            };
        }
        let index = pair.slot * MAX_PARTITIONS + partition;
        if pair.joined & 1 << partition == 0 {
            // A partition whose INIT was never acknowledged sends nothing but the TERMINATE
            // that ends an aborted migration: it is done with the pair, which goes once
            // every partition is.
            return match message {
                SwitchControl::Terminate { .. } if pair.terminated & 1 << partition == 0 => {
                    self.counters.control_applied += 1;
                    self.terminate(pair.slot, partition);
                    (Status::Ok, header.seq)
                }
                SwitchControl::Terminate { .. } => {
                    self.counters.control_duplicates += 1;
                    (Status::Ok, header.seq)
                }
                _ => (Status::Error, header.seq),
            };
        }
        let expected = u64::from(self.expected_seq[index]);
        match header.seq.cmp(&expected) {
            std::cmp::Ordering::Less => {
                self.counters.control_duplicates += 1;
                return (Status::Ok, expected - 1);
            }
            std::cmp::Ordering::Greater => {
                self.counters.control_gaps += 1;
                return (Status::Ok, expected - 1);
            }
            std::cmp::Ordering::Equal => {}
        }
        self.expected_seq[index] += 1;
        self.counters.control_applied += 1;
        match *message {
            SwitchControl::GroupStart { group, .. } => {
                let cells = self.cells(&pair, group);
                let mut saturated = false;
                for i in 0..HASHES {
                    let cell = &mut self.counting[i][cells.counting[i]];
                    let (value, now_saturated) = spec::cbf_increment(*cell);
                    *cell = value;
                    saturated |= now_saturated;
                }
                self.counters.cbf_saturated += u64::from(saturated);
                self.truth.entry((pair.slot, group)).or_default().in_flight += 1;
            }
            SwitchControl::GroupComplete { group, .. } => {
                let cells = self.cells(&pair, group);
                for i in 0..HASHES {
                    let cell = &mut self.counting[i][cells.counting[i]];
                    *cell = spec::cbf_decrement(*cell);
                    self.bloom[i][cells.bloom[i]] = 1;
                }
                let truth = self.truth.entry((pair.slot, group)).or_default();
                truth.in_flight = truth.in_flight.saturating_sub(1);
                truth.done = true;
            }
            SwitchControl::Terminate { .. } => self.terminate(pair.slot, partition),
            SwitchControl::Init { .. } => unreachable!("handled above"),
        }
        (Status::Ok, header.seq)
    }

    /// Installs the pair if absent and joins the sender's partition. Another migration of
    /// the same source shard (another stream, or destination) is refused while the pair is
    /// installed; a late copy of a finished migration's INIT is acknowledged and ignored.
    fn apply_init(&mut self, header: &HeaderRepr, message: &SwitchControl) -> (Status, u64) {
        let SwitchControl::Init {
            source_ip,
            dest_ip,
            dest_shard,
            size_exp,
            remain_exp,
            partitions,
            partition,
        } = *message
        else {
            unreachable!("only INIT comes here")
        };
        let (partition, stream) = (usize::from(partition), header.client);
        if header.seq != 0
            || usize::from(partitions) > MAX_PARTITIONS
            || partition >= usize::from(partitions)
        {
            return (Status::Error, header.seq);
        }
        if self.retired.contains(&(source_ip, header.shard, stream)) {
            self.counters.control_duplicates += 1;
            return (Status::Ok, 0);
        }
        let slot = match self.lookup(source_ip, header.shard) {
            Some(pair)
                if (pair.dest_ip, pair.dest_shard, pair.stream)
                    == (dest_ip, dest_shard, stream) =>
            {
                pair.slot
            }
            Some(_) => return (Status::Error, header.seq),
            None => {
                let Some(slot) = self.pairs.iter().position(Option::is_none) else {
                    return (Status::Error, header.seq); // Table full.
                };
                self.clear_slot(slot);
                self.pairs[slot] = Some(Pair {
                    slot,
                    source_ip,
                    source_shard: header.shard,
                    dest_ip,
                    dest_shard,
                    size_exp,
                    remain_exp,
                    partitions,
                    stream,
                    joined: 0,
                    terminated: 0,
                });
                self.counters.pairs_installed += 1;
                slot
            }
        };
        let pair = self.pairs[slot].as_mut().expect("installed");
        // A late INIT of a partition that already ended (it may end before it joined,
        // after an abort) does not join it again.
        if (pair.joined | pair.terminated) & 1 << partition == 0 {
            pair.joined |= 1 << partition;
            self.expected_seq[slot * MAX_PARTITIONS + partition] = 1;
            self.counters.control_applied += 1;
        } else {
            self.counters.control_duplicates += 1;
        }
        (Status::Ok, 0)
    }

    /// `partition` is done with the pair in `slot`. Once every partition is, the pair is
    /// removed (the cut-over, or the end of an abort) and its migration retired.
    fn terminate(&mut self, slot: usize, partition: usize) {
        let entry = self.pairs[slot].as_mut().expect("looked up");
        entry.terminated |= 1 << partition;
        let all = if entry.partitions as usize >= 64 {
            u64::MAX
        } else {
            (1u64 << entry.partitions) - 1
        };
        if entry.terminated & all == all {
            // Clients now learn the new owner from the source's MOVED answers.
            let (source_ip, shard, stream) = (entry.source_ip, entry.source_shard, entry.stream);
            self.pairs[slot] = None;
            self.clear_slot(slot);
            self.retire(source_ip, shard, stream);
            self.counters.pairs_removed += 1;
        }
    }

    fn retire(&mut self, source_ip: Ipv4Addr, shard: u16, stream: u32) {
        let finished = (source_ip, shard, stream);
        if self.retired.contains(&finished) {
            return;
        }
        if self.retired.len() == RETIRED_STREAMS {
            self.retired.pop_front();
        }
        self.retired.push_back(finished);
    }

    fn clear_slot(&mut self, slot: usize) {
        let (bf, cbf) = (self.config.bf_cells, self.config.cbf_cells);
        for i in 0..HASHES {
            self.bloom[i][slot * bf..(slot + 1) * bf].fill(0);
            self.counting[i][slot * cbf..(slot + 1) * cbf].fill(0);
        }
        self.expected_seq[slot * MAX_PARTITIONS..(slot + 1) * MAX_PARTITIONS].fill(0);
        self.truth.retain(|(s, _), _| *s != slot);
    }

    /// Counters, pairs and register occupancy.
    /// Cells `offset..offset + count` of one register array of a pair slot: the Bloom
    /// filter's (`counting == false`) or the counting filter's.
    pub fn read_registers(
        &self,
        counting: bool,
        array: usize,
        slot: usize,
        offset: usize,
        count: usize,
    ) -> Result<Vec<u8>, String> {
        let (registers, cells) = if counting {
            (&self.counting, self.config.cbf_cells)
        } else {
            (&self.bloom, self.config.bf_cells)
        };
        if array >= HASHES || slot >= MAX_PAIRS {
            return Err(format!(
                "array must be below {HASHES} and slot below {MAX_PAIRS}, got {array} and {slot}"
            ));
        }
        let end = offset.checked_add(count).filter(|&end| end <= cells);
        let Some(end) = end else {
            return Err(format!(
                "cells {offset}+{count} run past the array's {cells}"
            ));
        };
        Ok(registers[array][slot * cells + offset..slot * cells + end].to_vec())
    }

    pub fn snapshot(&self) -> SwitchSnapshot {
        let bf = self.config.bf_cells;
        let pairs = self
            .pairs()
            .map(|pair| {
                let range = pair.slot * bf..(pair.slot + 1) * bf;
                let bf_cells_set: [u64; HASHES] = std::array::from_fn(|i| {
                    self.bloom[i][range.clone()]
                        .iter()
                        .filter(|&&b| b != 0)
                        .count() as u64
                });
                let false_done_rate = bf_cells_set
                    .iter()
                    .map(|&set| set as f64 / bf as f64)
                    .product();
                let truths = self.truth.iter().filter(|((s, _), _)| *s == pair.slot);
                let (mut done, mut in_flight) = (0, 0);
                for (_, t) in truths {
                    done += u64::from(t.done);
                    in_flight += u64::from(t.in_flight > 0);
                }
                PairSnapshot {
                    slot: pair.slot,
                    source: format!("{}#{}", pair.source_ip, pair.source_shard),
                    destination: format!("{}#{}", pair.dest_ip, pair.dest_shard),
                    partitions: pair.partitions,
                    groups_done: done,
                    groups_in_flight: in_flight,
                    bf_cells_set,
                    false_done_rate,
                }
            })
            .collect();
        SwitchSnapshot {
            counters: self.counters,
            pairs,
            bf_cells: self.config.bf_cells,
            cbf_cells: self.config.cbf_cells,
        }
    }
}

struct Cells {
    bloom: [usize; HASHES],
    counting: [usize; HASHES],
}

/// Rewrites a request to go to the pair's destination: IPv4 destination and shard; the
/// UDP port and the client's address stay, so the destination answers the client.
fn redirect(packet: &mut Packet, header: &HeaderRepr, pair: &Pair) {
    let mut rewritten = *header;
    rewritten.shard = pair.dest_shard;
    rewritten.flags = header.flags.with(Flags::REDIRECTED);
    rewritten.emit(&mut Header::new_unchecked(
        &mut packet.buffer_mut()[..HEADER_LEN],
    ));
    packet.dst = SocketAddrV4::new(pair.dest_ip, packet.dst.port());
}
