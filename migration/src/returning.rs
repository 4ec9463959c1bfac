//! The destination's side of an abort, for one partition of one shard (sans-I/O).
//!
//! ABORT arrives in the source's stream, so everything the source sent before it has been
//! applied. From then on the destination serves nothing of the shard: requests steered to
//! it are forwarded to the source, which answers RETRY_LATER for what may be stale there
//! until the return is applied, and clients that followed MOVED here are sent back.
//! (`serve/requests.rs` decides which.) The destination sends back, in its own ordered stream (same
//! stream id): its write-dedup windows (so a write it applied is never applied again at
//! the source), every entry and tombstone it holds group by group, and TERMINATE with its
//! clock (so later writes at the source are newer). Source-based skips the entries: its
//! source kept every write.

use crate::dedup::WriteDedup;
use crate::journal::StreamOrigin;
use crate::outgoing::{encode_group, STREAM_WINDOW};
use crate::stream::StreamSender;
use dataplane::wire::{HeaderRepr, Protocol, StreamMessage};
use dataplane::Packet;
use kv::{Partition, PartitionMap};
use std::net::SocketAddrV4;
use std::ops::Range;
use std::time::Instant;

/// Counters of a destination's returns, summed over partitions for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReturnStats {
    pub returns: u64,
    pub keys_returned: u64,
    pub bytes_returned: u64,
}

impl ReturnStats {
    pub fn add(&mut self, other: &ReturnStats) {
        self.returns += other.returns;
        self.keys_returned += other.keys_returned;
        self.bytes_returned += other.bytes_returned;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Windows,
    /// Entries of groups from this one on still to send.
    Entries(u32),
    /// TERMINATE sent (stream seq).
    Terminating(u64),
    Done,
}

pub struct Returning {
    /// The migration: the source core (requests are forwarded there), its shard, the
    /// stream's id and the protocol.
    pub origin: StreamOrigin,
    to_source: StreamSender,
    groups: Range<u32>,
    send_entries: bool,
    step: Step,
    table_released: bool,
    stats: ReturnStats,
}

impl Returning {
    pub fn new(origin: StreamOrigin, map: &PartitionMap, partition: u32) -> Self {
        Returning {
            origin,
            to_source: StreamSender::new(origin.source, STREAM_WINDOW, origin.stream_id),
            groups: map.groups_of(partition),
            send_entries: origin.protocol != Protocol::SourceBased,
            step: Step::Windows,
            table_released: false,
            stats: ReturnStats {
                returns: 1,
                ..ReturnStats::default()
            },
        }
    }

    /// Everything is back at the source: the table here can go.
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Done, its table freed and every message acknowledged: nothing left to poll for.
    pub fn is_finished(&self) -> bool {
        self.is_done() && self.table_released && self.to_source.pending() == 0
    }

    /// True once, when the return is done: the caller frees the table then.
    pub fn release_table(&mut self) -> bool {
        let release = self.is_done() && !self.table_released;
        self.table_released |= release;
        release
    }

    pub fn stats(&self) -> ReturnStats {
        self.stats
    }

    pub fn on_ack(&mut self, from: SocketAddrV4, ack: &HeaderRepr, now: Instant) {
        if self.to_source.owns_ack(from, ack) {
            self.to_source.on_ack(ack.seq, now);
        }
    }

    /// Sends the next part of the return as the stream's window allows (a group at a
    /// time, so the loop keeps serving its other shards), and retransmits.
    pub fn poll(
        &mut self,
        now: Instant,
        table: &Partition,
        dedup: &WriteDedup,
        out: &mut Vec<Box<Packet>>,
    ) {
        loop {
            match self.step {
                Step::Windows => {
                    for window in dedup.windows() {
                        self.send(&window.message());
                    }
                    self.step = Step::Entries(self.groups.start);
                }
                Step::Entries(group) if group < self.groups.end && self.send_entries => {
                    if self.to_source.pending() >= STREAM_WINDOW {
                        break;
                    }
                    for (count, bytes, items) in encode_group(table, group) {
                        self.send(&StreamMessage::Data {
                            group,
                            count,
                            items: &items,
                        });
                        self.stats.keys_returned += u64::from(count);
                        self.stats.bytes_returned += bytes;
                    }
                    self.step = Step::Entries(group + 1);
                }
                Step::Entries(_) => {
                    let terminate = StreamMessage::Terminate {
                        floor_clock: table.clock(),
                    };
                    self.step = Step::Terminating(self.send(&terminate));
                }
                Step::Terminating(seq) => {
                    if self.to_source.is_acked(seq) {
                        self.step = Step::Done;
                    }
                    break;
                }
                Step::Done => break,
            }
        }
        self.to_source.poll(now, out);
    }

    fn send(&mut self, message: &StreamMessage<'_>) -> u64 {
        self.to_source
            .push(message.op(), self.origin.shard, |b| message.emit(b))
    }
}
