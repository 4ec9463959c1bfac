//! The operation history as JSON lines (`--history PATH`), in the vocabulary of Jepsen-style
//! checkers (Knossos, Porcupine readers), and back: a user checks our runs with a checker we
//! did not write, and `netmigrate check-history` checks any such file with ours. The format
//! is specified in `docs/report.md` ("The history").
//!
//! One operation becomes an `invoke` event at its call and an `ok` (answered) or `info`
//! (outcome unknown) event when the client stopped waiting. Writes name their value by its
//! tag, `"w<writer>-<seq>"`, unique per write, so a read names the write it saw.

use crate::linearizability::{Op, OpKind};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::Path;

/// Where one event of an operation stands in the file. At one instant, completions of
/// earlier operations come first (a process's next operation never precedes the end of
/// its last one), then invocations, then the completions of operations that took no time.
fn event_order(op: &Op, completion: bool) -> (u64, u8) {
    match completion {
        false => (op.call_ns, 1),
        true if op.end_ns <= op.call_ns => (op.call_ns, 2),
        true => (op.end_ns, 0),
    }
}

/// Writes `history` (times in nanoseconds from the start of the run) to `path`, events in
/// time order. Written beside the target and renamed, so a reader never sees half a file.
pub fn write(history: &[Op], path: &Path) -> io::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    write_events(history, &mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes `history`'s events, in time order.
fn write_events(history: &[Op], out: &mut impl Write) -> io::Result<()> {
    let mut events: Vec<(u64, u8, u32, bool)> = Vec::with_capacity(2 * history.len());
    for (index, op) in history.iter().enumerate() {
        let index = u32::try_from(index).map_err(|_| io::Error::other("history too long"))?;
        for completion in [false, true] {
            let (time, rank) = event_order(op, completion);
            events.push((time, rank, index, completion));
        }
    }
    events.sort_unstable();
    for &(time, _, index, completion) in &events {
        write_event(out, &history[index as usize], completion, time)?;
    }
    Ok(())
}

/// Reads the history file `earlier` and `later`, operations of this process that came after
/// every one of it (their times are moved past its end), as one history named alike: the
/// earlier history alone, and both. For a check after a restart (`ycsb --read-back`).
pub fn read_and_append(earlier: &[u8], later: &[Op]) -> Result<(Vec<Op>, Vec<Op>), HistoryError> {
    let before = read(earlier)?;
    let end = before
        .iter()
        .map(|op| op.end_ns.max(op.return_ns.unwrap_or(0)))
        .max()
        .map_or(0, |end| end + 1);
    let moved: Vec<Op> = later
        .iter()
        .map(|op| Op {
            call_ns: op.call_ns + end,
            return_ns: op.return_ns.map(|r| r + end),
            end_ns: op.end_ns + end,
            ..op.clone()
        })
        .collect();
    let mut both = earlier.to_vec();
    if !both.is_empty() && !both.ends_with(b"\n") {
        both.push(b'\n');
    }
    write_events(&moved, &mut both).map_err(HistoryError::Io)?;
    Ok((before, read(&both[..])?))
}

fn write_event(out: &mut impl Write, op: &Op, completion: bool, time: u64) -> io::Result<()> {
    let answered = op.return_ns.is_some();
    let kind = match (completion, answered) {
        (false, _) => "invoke",
        (true, true) => "ok",
        (true, false) => "info",
    };
    let (f, value) = match op.kind {
        OpKind::Write(tag) => ("write", Some(tag)),
        OpKind::Read(seen) => ("read", seen.filter(|_| completion && answered)),
        OpKind::Delete(_) => ("delete", None),
    };
    write!(
        out,
        r#"{{"process": {}, "type": "{kind}", "f": "{f}", "key": {}, "value": "#,
        op.process, op.key
    )?;
    match value {
        Some(tag) => write!(out, r#""{}""#, crate::value::name(tag))?,
        None => out.write_all(b"null")?,
    }
    if let (OpKind::Delete(Some(existed)), true, true) = (op.kind, completion, answered) {
        write!(out, r#", "existed": {existed}"#)?;
    }
    writeln!(out, r#", "time": {time}}}"#)
}

/// Why a history file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the history: {0}")]
    Io(#[from] io::Error),
    #[error("line {line}: not a history event: {reason}")]
    Malformed { line: usize, reason: String },
    #[error("line {line}: process {process} invokes an operation while its last one is open")]
    Overlap { line: usize, process: u64 },
    #[error("line {line}: process {process} completes an operation it never invoked")]
    Unmatched { line: usize, process: u64 },
    #[error("line {line}: process {process} completes a {got} on key {key_got} but invoked a {want} on key {key_want}")]
    Mismatch {
        line: usize,
        process: u64,
        got: String,
        want: String,
        key_got: String,
        key_want: String,
    },
}

#[derive(Deserialize)]
struct Event {
    process: u64,
    #[serde(rename = "type")]
    kind: EventType,
    f: Function,
    key: serde_json::Value,
    #[serde(default)]
    value: serde_json::Value,
    time: u64,
    #[serde(default)]
    existed: Option<bool>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Function {
    Read,
    Write,
    Delete,
}

/// Keys and values as the checker's numbers: JSON numbers stand for themselves (keys) and
/// every other key, and every value, gets a number of its own by its JSON text.
#[derive(Default)]
struct Names {
    keys: HashMap<String, u64>,
    values: HashMap<String, u64>,
}

impl Names {
    fn key(&mut self, key: &serde_json::Value) -> u64 {
        if let Some(number) = key.as_u64() {
            return number;
        }
        let next = (1 << 63) | self.keys.len() as u64;
        *self.keys.entry(key.to_string()).or_insert(next)
    }

    /// `None` for JSON null (nothing read, or nothing written yet).
    fn value(&mut self, value: &serde_json::Value) -> Option<u64> {
        if value.is_null() {
            return None;
        }
        let next = self.values.len() as u64;
        Some(*self.values.entry(value.to_string()).or_insert(next))
    }

    /// The operation `invoked` by `process`, ended at `end_ns` with `answer` (what was read
    /// and whether a deleted key existed), or of unknown outcome (None).
    fn op(
        &mut self,
        process: u64,
        invoked: Open,
        end_ns: u64,
        answer: Option<(serde_json::Value, Option<bool>)>,
    ) -> Op {
        let kind = match (invoked.f, &answer) {
            (Function::Write, _) => OpKind::Write(self.value(&invoked.value).unwrap_or(u64::MAX)),
            (Function::Read, Some((seen, _))) => OpKind::Read(self.value(seen)),
            (Function::Read, None) => OpKind::Read(None),
            (Function::Delete, Some((_, existed))) => OpKind::Delete(*existed),
            (Function::Delete, None) => OpKind::Delete(None),
        };
        Op {
            key: self.key(&invoked.key),
            process,
            call_ns: invoked.call_ns,
            return_ns: answer.is_some().then_some(end_ns),
            end_ns,
            kind,
        }
    }
}

/// An operation whose invocation has been read and whose completion has not.
struct Open {
    f: Function,
    key: serde_json::Value,
    value: serde_json::Value,
    call_ns: u64,
}

/// Reads a history in the format [`write`] produces (or any history in that vocabulary)
/// back into operations. A `fail` completion drops its operation (known not to have
/// happened); an operation still open at the end of the file is of unknown outcome.
pub fn read(input: impl BufRead) -> Result<Vec<Op>, HistoryError> {
    let mut names = Names::default();
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut ops = Vec::new();
    for (number, line) in input.lines().enumerate() {
        let (line, text) = (number + 1, line?);
        if text.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(&text).map_err(|e| HistoryError::Malformed {
            line,
            reason: e.to_string(),
        })?;
        let process = event.process;
        if event.kind == EventType::Invoke {
            let invoked = Open {
                f: event.f,
                key: event.key,
                value: event.value,
                call_ns: event.time,
            };
            if open.insert(process, invoked).is_some() {
                return Err(HistoryError::Overlap { line, process });
            }
            continue;
        }
        let invoked = open
            .remove(&process)
            .ok_or(HistoryError::Unmatched { line, process })?;
        if invoked.f != event.f || invoked.key != event.key {
            return Err(HistoryError::Mismatch {
                line,
                process,
                got: format!("{:?}", event.f).to_lowercase(),
                want: format!("{:?}", invoked.f).to_lowercase(),
                key_got: event.key.to_string(),
                key_want: invoked.key.to_string(),
            });
        }
        if event.kind != EventType::Fail {
            let answer = (event.kind == EventType::Ok).then_some((event.value, event.existed));
            ops.push(names.op(process, invoked, event.time, answer));
        }
    }
    // Never completed: outcome unknown.
    let mut unfinished: Vec<_> = open.into_iter().collect();
    unfinished.sort_unstable_by_key(|(process, _)| *process);
    for (process, invoked) in unfinished {
        let end = invoked.call_ns;
        ops.push(names.op(process, invoked, end, None));
    }
    Ok(ops)
}
