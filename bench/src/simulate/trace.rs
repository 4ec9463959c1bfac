//! The last events of a run, kept cheaply and written out only when a seed fails: what
//! the network delivered (who to whom, op, status, seq) and what the plan did.

use super::network::Hop;
use dataplane::wire;
use dataplane::Packet;
use std::collections::VecDeque;
use std::fmt::Write;
use std::net::SocketAddrV4;

enum Event {
    Delivered {
        hop: Hop,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        header: Option<wire::HeaderRepr>,
    },
    Note(String),
}

pub struct Trace {
    events: VecDeque<(u64, Event)>,
    keep: usize,
}

impl Trace {
    pub fn new(keep: usize) -> Trace {
        Trace {
            events: VecDeque::with_capacity(keep.min(1 << 16)),
            keep,
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        if self.keep == 0 {
            return;
        }
        if self.events.len() == self.keep {
            self.events.pop_front();
        }
        self.events.push_back((at, event));
    }

    pub fn record(&mut self, at: u64, hop: Hop, packet: &Packet) {
        let header = wire::parse_header(packet.payload()).ok().map(|(h, _)| h);
        let (src, dst) = (packet.src, packet.dst);
        self.push(
            at,
            Event::Delivered {
                hop,
                src,
                dst,
                header,
            },
        );
    }

    pub fn note(&mut self, at: u64, text: String) {
        self.push(at, Event::Note(text));
    }

    /// The kept events, one a line, oldest first.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (at, event) in &self.events {
            let _ = write!(out, "{:>12.3} µs  ", *at as f64 / 1e3);
            let _ = match event {
                Event::Note(text) => writeln!(out, "** {text}"),
                Event::Delivered {
                    hop,
                    src,
                    dst,
                    header,
                } => {
                    let via = match hop {
                        Hop::ToSwitch => "→ switch",
                        Hop::ToHost => "switch →",
                    };
                    match header {
                        Some(h) => writeln!(
                            out,
                            "{src} → {dst} ({via}) {:?} {:?} seq {} shard {} client {} flags {:#04x} hash {:#018x}",
                            h.op, h.status, h.seq, h.shard, h.client, h.flags.0, h.key_hash
                        ),
                        None => writeln!(out, "{src} → {dst} ({via}) (no header)"),
                    }
                }
            };
        }
        out
    }
}
