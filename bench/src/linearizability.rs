//! Linearizability checker for single-key register histories.
//!
//! The benchmark client records, for every operation, when the request was
//! first sent, when (if ever) the accepted reply arrived, and what the client
//! observed. [`check`] decides, key by key, whether the observations can be
//! explained by some sequential order of atomic operations on a register that
//! starts out *absent* and that respects real time.
//!
//! # Algorithm
//!
//! * **Per key.** Linearizability is compositional (P-compositionality), so
//!   the history is grouped by key and every key is decided on its own.
//! * **Fast path (Gibbons–Korach, O(n log n)).** If a key has no `Delete` and
//!   its write tags are unique, every read maps to exactly one write
//!   (`Read(None)` to the initial absent state, modelled as a write that is
//!   called and returns before everything else). Each write is clustered with
//!   the reads of its value; a cluster has `f` = min return time and `s` = max
//!   call time. The key is linearizable iff no read returns before its write
//!   is called, no two forward zones (`f < s`, interval `[f, s]`) overlap and
//!   no backward zone (`s <= f`, interval `[s, f]`) lies strictly inside a
//!   forward zone. This is checked with a sort and a sweep.
//! * **General path (Wing & Gong / Lowe DFS).** Keys with a `Delete` (the
//!   absent value can then come from several sources) or with repeated write
//!   tags are searched: a depth-first search over the order of linearization
//!   points, operations taken in call order, with memoisation of
//!   (set of linearized ops, register value) and a step budget. A key whose
//!   budget runs out is reported in [`CheckReport::unchecked_keys`].
//!
//! # Time model and edge cases
//!
//! * Operation `a` precedes `b` in real time iff `a.return_ns < b.call_ns`
//!   (strict). Equal timestamps make operations concurrent, because a clock
//!   tick cannot order them.
//! * `return_ns < call_ns` is malformed (e.g. a clock step); the return time is
//!   clamped to the call time, i.e. the operation is treated as instantaneous
//!   at its call. The checker never panics on any input.
//! * A write or delete with `return_ns == None` may or may not have taken
//!   effect; its interval is `[call, +inf)`. A read with `return_ns == None`
//!   tells nothing and is dropped (and not counted).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// What a client observed for one operation on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A read that returned the value tagged `Some(tag)`, or `None` = key not found.
    Read(Option<u64>),
    /// A write (put/insert/update) of a value carrying the unique tag.
    Write(u64),
    /// A delete (the key becomes absent), with what the server answered: `Some(true)` the
    /// key existed (OK), `Some(false)` it did not (NOT_FOUND), `None` not known (no answer,
    /// or the answer to a copy already applied). A known answer is checked like a read of
    /// the key just before the delete.
    Delete(Option<bool>),
}

/// One client operation on one key.
#[derive(Clone, Debug)]
pub struct Op {
    /// Key identifier.
    pub key: u64,
    /// The client process that issued it: one process has at most one operation open at a
    /// time (used by the history export; the checker does not need it).
    pub process: u64,
    /// Real time the client first sent the request.
    pub call_ns: u64,
    /// Real time the accepted reply arrived; `None` = outcome unknown (timed out / failed).
    pub return_ns: Option<u64>,
    /// When the client stopped waiting: the reply's arrival, or when it gave up.
    pub end_ns: u64,
    /// What was done / observed.
    pub kind: OpKind,
}

/// Result of [`check`].
///
/// Every key with at least one retained operation ends up in exactly one of
/// `keys` (decided: linearizable or violating) and `unchecked_keys`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckReport {
    /// Ops of decided keys that took part in the check (reads with unknown
    /// outcome are dropped and not counted; ops of unchecked keys neither).
    pub checked_ops: u64,
    /// Distinct keys decided (linearizable or not); excludes `unchecked_keys`.
    pub keys: u64,
    /// Number of KEYS whose history is not linearizable.
    pub violations: u64,
    /// Keys abandoned because the search budget ran out (never silently counted as OK).
    pub unchecked_keys: u64,
    /// Up to 5 human-readable descriptions of violating keys (key, which ops, why).
    pub examples: Vec<String>,
}

/// Search budget per key used by [`check`] for keys that need the general search.
pub const DEFAULT_BUDGET_PER_KEY: u64 = 1_000_000;

/// How many violation descriptions a report keeps.
const MAX_EXAMPLES: usize = 5;

/// Internal time: wide enough for a point before every `u64` time (the initial
/// state) and for `+inf` (unknown outcome) without colliding with real times.
type Time = i128;
/// The initial absent state is "written" at this time, before any real call.
const INIT_TIME: Time = -1;
/// Return time of an operation whose outcome is unknown.
const INF: Time = i128::MAX;

/// Checks every key of `history` with the default search budget.
pub fn check(history: &[Op]) -> CheckReport {
    check_with_budget(history, DEFAULT_BUDGET_PER_KEY)
}

/// Same as [`check`], with an explicit per-key search budget (number of search
/// steps) for keys that need the general search. The fast path ignores it.
pub fn check_with_budget(history: &[Op], budget_per_key: u64) -> CheckReport {
    // Unknown-outcome reads carry no information: drop them up front.
    let mut order: Vec<usize> = (0..history.len())
        .filter(|&i| {
            !(matches!(history[i].kind, OpKind::Read(_)) && history[i].return_ns.is_none())
        })
        .collect();
    // Stable: within a key, ops keep history order (only used for messages).
    order.sort_by_key(|&i| history[i].key);

    let mut report = CheckReport::default();
    let mut ops: Vec<KeyOp> = Vec::new();
    for group in order.chunk_by(|&a, &b| history[a].key == history[b].key) {
        let key = history[group[0]].key;
        ops.clear();
        ops.extend(group.iter().map(|&i| KeyOp::new(i, &history[i])));
        match check_key(&ops, budget_per_key) {
            Verdict::Linearizable => {
                report.keys += 1;
                report.checked_ops += ops.len() as u64;
            }
            Verdict::Violation(why) => {
                report.keys += 1;
                report.checked_ops += ops.len() as u64;
                report.violations += 1;
                if report.examples.len() < MAX_EXAMPLES {
                    report.examples.push(format!("key {key}: {why}"));
                }
            }
            Verdict::Unknown => report.unchecked_keys += 1,
        }
    }
    report
}

/// One retained operation of a single key, with normalised times.
#[derive(Clone, Debug)]
struct KeyOp {
    /// Index in the caller's history (for messages).
    id: usize,
    call: Time,
    /// `>= call`; [`INF`] when the outcome is unknown.
    ret: Time,
    kind: OpKind,
}

impl KeyOp {
    fn new(id: usize, op: &Op) -> Self {
        let call = Time::from(op.call_ns);
        // Malformed return-before-call is clamped to the call time.
        let ret = op.return_ns.map_or(INF, |r| Time::from(r).max(call));
        KeyOp {
            id,
            call,
            ret,
            kind: op.kind,
        }
    }

    fn pending(&self) -> bool {
        self.ret == INF
    }
}

/// `op #12 Write(3) [100, 250]`, with `?` for an unknown return.
fn describe(op: &KeyOp) -> String {
    let ret = if op.pending() {
        "?".to_string()
    } else {
        op.ret.to_string()
    };
    format!("op #{} {:?} [{}, {}]", op.id, op.kind, op.call, ret)
}

/// Outcome for one key.
#[derive(Debug)]
enum Verdict {
    Linearizable,
    /// Not linearizable; the string says why.
    Violation(String),
    /// The search budget ran out.
    Unknown,
}

impl Verdict {
    #[cfg(test)]
    fn is_ok(&self) -> Option<bool> {
        match self {
            Verdict::Linearizable => Some(true),
            Verdict::Violation(_) => Some(false),
            Verdict::Unknown => None,
        }
    }
}

/// Picks the fast path when every read maps to a unique write.
fn check_key(ops: &[KeyOp], budget: u64) -> Verdict {
    let mut tags = HashSet::with_capacity(ops.len());
    let mut read_mapped = true;
    for op in ops {
        match op.kind {
            OpKind::Delete(_) => read_mapped = false,
            OpKind::Write(t) => read_mapped &= tags.insert(t),
            OpKind::Read(_) => {}
        }
        if !read_mapped {
            break;
        }
    }
    if read_mapped {
        gibbons_korach(ops)
    } else {
        search(ops, budget)
    }
}

/// First read of a tag that no write of the key produced, if any.
fn read_of_unwritten(ops: &[KeyOp]) -> Option<Verdict> {
    let written: HashSet<u64> = ops
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::Write(t) => Some(t),
            _ => None,
        })
        .collect();
    ops.iter()
        .find(|op| matches!(op.kind, OpKind::Read(Some(t)) if !written.contains(&t)))
        .map(|op| {
            Verdict::Violation(format!(
                "{} read a value that no write of this key produced",
                describe(op)
            ))
        })
}

// ---------------------------------------------------------------------------
// Fast path: Gibbons & Korach, "Testing shared memories" (SIAM J. Comput. 1997)
// ---------------------------------------------------------------------------

/// A write together with the reads of its value.
///
/// In any linearization a cluster is a contiguous block (the write, then its
/// reads), and that block must cover `[f, s]`: it starts no later than the
/// first return `f` and ends no earlier than the last call `s`.
struct Cluster {
    /// Index into the key's ops; `None` = the initial absent state.
    write: Option<usize>,
    /// Minimum return time in the cluster and the op that has it.
    f: Time,
    f_op: Option<usize>,
    /// Maximum call time in the cluster and the op that has it.
    s: Time,
    s_op: Option<usize>,
}

impl Cluster {
    fn forward(&self) -> bool {
        self.f < self.s
    }
}

/// Decides a key whose reads map to unique writes (no `Delete`, unique tags),
/// in O(n log n).
///
/// Conditions (with precedence `a.ret < b.call` strict, so touching endpoints
/// are fine):
/// 1. no read returns before its write is called (`read.ret < write.call`);
/// 2. no two forward zones overlap: `max(f1, f2) < min(s1, s2)`;
/// 3. no backward zone `[s, f]` lies strictly inside a forward zone
///    `[fD, sD]`: `fD < s && f < sD` (the block could go neither before the
///    forward block, which needs `s <= fD`, nor after it, which needs `sD <= f`).
///
/// The initial state is a write at [`INIT_TIME`] (before every call) that
/// returns at once, so `Read(None)` reads from it. A write with unknown
/// outcome has `ret = +inf`: unread, its zone `[call, inf]` is backward and can
/// never be inside a forward zone (`s` is always finite), i.e. it may be placed
/// last; read, its `f` comes from the reads.
fn gibbons_korach(ops: &[KeyOp]) -> Verdict {
    let mut clusters = Vec::with_capacity(ops.len() + 1);
    clusters.push(Cluster {
        write: None,
        f: INIT_TIME,
        f_op: None,
        s: INIT_TIME,
        s_op: None,
    });
    let mut cluster_of_tag: HashMap<u64, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let OpKind::Write(t) = op.kind {
            if cluster_of_tag.insert(t, clusters.len()).is_some() {
                // Not read-mapped after all; the caller routes these elsewhere,
                // but stay correct if called directly.
                return search(ops, DEFAULT_BUDGET_PER_KEY);
            }
            clusters.push(Cluster {
                write: Some(i),
                f: op.ret,
                f_op: Some(i),
                s: op.call,
                s_op: Some(i),
            });
        }
    }
    for (i, op) in ops.iter().enumerate() {
        let c = match op.kind {
            OpKind::Read(None) => 0,
            OpKind::Read(Some(t)) => match cluster_of_tag.get(&t) {
                Some(&c) => c,
                None => {
                    return Verdict::Violation(format!(
                        "{} read a value that no write of this key produced",
                        describe(op)
                    ))
                }
            },
            OpKind::Write(_) => continue,
            OpKind::Delete(_) => return search(ops, DEFAULT_BUDGET_PER_KEY),
        };
        let cl = &mut clusters[c];
        if let Some(w) = cl.write {
            if op.ret < ops[w].call {
                return Verdict::Violation(format!(
                    "{} returned before its write {} was called",
                    describe(op),
                    describe(&ops[w])
                ));
            }
        }
        if op.ret < cl.f {
            cl.f = op.ret;
            cl.f_op = Some(i);
        }
        if op.call > cl.s {
            cl.s = op.call;
            cl.s_op = Some(i);
        }
    }

    let mut forward: Vec<usize> = (0..clusters.len())
        .filter(|&c| clusters[c].forward())
        .collect();
    forward.sort_unstable_by_key(|&c| (clusters[c].f, clusters[c].s));

    // Condition 2: sweep by f, remembering the forward zone reaching furthest.
    let mut widest: Option<usize> = None;
    for &c in &forward {
        if let Some(p) = widest {
            if clusters[c].f < clusters[p].s {
                return Verdict::Violation(format!(
                    "two values were each observed after the other: {}, and {}",
                    zone_text(ops, &clusters[p]),
                    zone_text(ops, &clusters[c]),
                ));
            }
        }
        if widest.is_none_or(|p| clusters[c].s > clusters[p].s) {
            widest = Some(c);
        }
    }

    // Condition 3: forward zones are now pairwise disjoint and sorted, so the
    // only candidate containing a backward zone is the last one with fD < s.
    for cl in clusters.iter().filter(|cl| !cl.forward()) {
        let pos = forward.partition_point(|&d| clusters[d].f < cl.s);
        if pos == 0 {
            continue;
        }
        let d = &clusters[forward[pos - 1]];
        if cl.f < d.s {
            return Verdict::Violation(format!(
                "{} had to take effect within [{}, {}] ({}), but {}: stale or out-of-order read",
                cluster_name(ops, cl),
                cl.s,
                cl.f,
                if cl.s_op == cl.write && cl.f_op == cl.write {
                    "the write's own interval".to_string()
                } else {
                    format!(
                        "{} called, {} returned",
                        member_text(ops, cl, cl.s_op),
                        member_text(ops, cl, cl.f_op)
                    )
                },
                zone_text(ops, d),
            ));
        }
    }
    Verdict::Linearizable
}

fn cluster_name(ops: &[KeyOp], cl: &Cluster) -> String {
    match cl.write {
        None => "the initial absent state".to_string(),
        Some(w) => format!("the value of {}", describe(&ops[w])),
    }
}

/// An op of a cluster, without repeating the cluster's own write.
fn member_text(ops: &[KeyOp], cl: &Cluster, op: Option<usize>) -> String {
    match op {
        None => "the initial state".to_string(),
        Some(i) if Some(i) == cl.write => "the write".to_string(),
        Some(i) => describe(&ops[i]),
    }
}

/// Why a forward cluster must be current throughout `[f, s]`.
fn zone_text(ops: &[KeyOp], cl: &Cluster) -> String {
    let from = match cl.f_op {
        None => "the start".to_string(),
        Some(_) => format!("{} ({} returned)", cl.f, member_text(ops, cl, cl.f_op)),
    };
    format!(
        "{} must stay current from {} until {} ({} called)",
        cluster_name(ops, cl),
        from,
        cl.s,
        member_text(ops, cl, cl.s_op),
    )
}

// ---------------------------------------------------------------------------
// General path: Wing & Gong / Lowe depth-first search with memoisation
// ---------------------------------------------------------------------------

/// Register state during the search: `None` = absent.
type Value = Option<u64>;

/// Effect of `kind` on `state`, or `None` if what it observed disagrees with it (a read's
/// value, or whether a deleted key existed).
fn apply(state: Value, kind: &OpKind) -> Option<Value> {
    match kind {
        OpKind::Read(v) => (*v == state).then_some(state),
        OpKind::Write(t) => Some(Some(*t)),
        OpKind::Delete(Some(existed)) if *existed != state.is_some() => None,
        OpKind::Delete(_) => Some(None),
    }
}

/// SplitMix64 finaliser: cheap, deterministic, well-mixed.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hasher for 128-bit fingerprints that are already uniformly random.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

/// Sentinel "no node" for the event list.
const NIL: usize = usize::MAX;
/// List head node.
const HEAD: usize = 0;

/// Doubly linked list of call/return events in time order, with O(1)
/// removal and LIFO re-insertion (dancing links), as in Lowe's algorithm.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Op of each node (node 0 is the head).
    op: Vec<usize>,
    is_return: Vec<bool>,
    call_node: Vec<usize>,
    /// `NIL` for ops with unknown outcome: they never force anything.
    return_node: Vec<usize>,
}

impl EventList {
    fn new(ops: &[KeyOp]) -> Self {
        // (time, is_return, op): calls sort before returns at equal times, so
        // operations that touch at one instant are concurrent.
        let mut events: Vec<(Time, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            if !op.pending() {
                events.push((op.ret, true, i));
            }
        }
        events.sort_unstable();
        let m = events.len();
        let mut list = EventList {
            next: (1..=m).chain([NIL]).collect(),
            prev: std::iter::once(NIL).chain(0..m).collect(),
            op: std::iter::once(NIL)
                .chain(events.iter().map(|e| e.2))
                .collect(),
            is_return: std::iter::once(false)
                .chain(events.iter().map(|e| e.1))
                .collect(),
            call_node: vec![NIL; ops.len()],
            return_node: vec![NIL; ops.len()],
        };
        for (k, &(_, is_ret, i)) in events.iter().enumerate() {
            if is_ret {
                list.return_node[i] = k + 1;
            } else {
                list.call_node[i] = k + 1;
            }
        }
        list
    }

    fn unlink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = x;
        if x != NIL {
            self.prev[x] = p;
        }
    }

    fn relink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = n;
        if x != NIL {
            self.prev[x] = n;
        }
    }

    /// Removes both events of `op` (it has been linearized).
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if self.return_node[op] != NIL {
            self.unlink(self.return_node[op]);
        }
    }

    /// Undoes the matching [`EventList::lift`]; must be called in LIFO order.
    fn unlift(&mut self, op: usize) {
        if self.return_node[op] != NIL {
            self.relink(self.return_node[op]);
        }
        self.relink(self.call_node[op]);
    }
}

/// One linearization decision on the DFS stack.
struct Frame {
    op: usize,
    state: Value,
    set: (u64, u64),
}

/// The latest return of an operation that observes each state of the key: a read of the
/// value; for any value, a delete answered OK (the key existed); for the absent state, a
/// read answered NOT_FOUND and a delete answered NOT_FOUND.
struct LastObservations {
    value: HashMap<u64, Time>,
    existed: Time,
    absent: Time,
}

impl LastObservations {
    fn of_value(&self, tag: u64) -> Time {
        self.value
            .get(&tag)
            .copied()
            .unwrap_or(Time::MIN)
            .max(self.existed)
    }
}

fn last_observations(ops: &[KeyOp]) -> LastObservations {
    let mut seen = LastObservations {
        value: HashMap::new(),
        existed: Time::MIN,
        absent: Time::MIN,
    };
    for op in ops.iter().filter(|op| !op.pending()) {
        match op.kind {
            OpKind::Read(Some(t)) => {
                let e = seen.value.entry(t).or_insert(op.ret);
                *e = (*e).max(op.ret);
            }
            OpKind::Read(None) | OpKind::Delete(Some(false)) => {
                seen.absent = seen.absent.max(op.ret)
            }
            OpKind::Delete(Some(true)) => seen.existed = seen.existed.max(op.ret),
            OpKind::Write(_) | OpKind::Delete(None) => {}
        }
    }
    seen
}

/// Decides a key by searching over linearization orders, within `budget` steps.
///
/// Lowe's formulation: events are kept in time order; scanning from the head,
/// any call event met before the first return event is a candidate for the
/// next linearization point. Hitting a return event means that operation had
/// to be linearized already, so the search backtracks. Each (linearized set,
/// value) configuration is explored at most once; the set is represented by a
/// 128-bit Zobrist fingerprint (a false "seen" needs a 2^-128-order hash
/// collision), which keeps memory at O(budget) even for huge keys.
///
/// Two sound reductions keep the search small:
/// * An unknown-outcome write/delete that nothing could have observed is
///   dropped: for a write, no read of its value and no delete answered OK
///   returns after its call; for a delete, no NOT_FOUND (read or delete). In
///   any linearization it is then directly followed by another write/delete
///   that observes nothing of it, or by the end, so removing it (or re-adding
///   it at the very end) changes nothing.
/// * A read that agrees with the current value is never a wrong choice: moving
///   it to "now" keeps every later read's value and every real-time
///   constraint (all ops that must precede it are already linearized). So when
///   a branch that linearized a read fails, the state before it fails too and
///   the search backtracks past it without trying alternatives.
fn search(ops: &[KeyOp], budget: u64) -> Verdict {
    if let Some(v) = read_of_unwritten(ops) {
        return v;
    }
    let last_seen = last_observations(ops);
    let ops: Vec<KeyOp> = ops
        .iter()
        .filter(|op| {
            let seen = match op.kind {
                _ if !op.pending() => return true,
                OpKind::Write(t) => last_seen.of_value(t),
                OpKind::Delete(_) => last_seen.absent,
                OpKind::Read(_) => return false, // unreachable: dropped earlier
            };
            seen >= op.call
        })
        .cloned()
        .collect();

    let total_finite = ops.iter().filter(|op| !op.pending()).count();
    let zobrist: Vec<(u64, u64)> = (0..ops.len() as u64)
        .map(|i| (mix64(2 * i), mix64(2 * i + 1)))
        .collect();
    let fingerprint = |set: (u64, u64), v: Value| -> u128 {
        let h = match v {
            None => 0x005E_ED0F_AB5E_u64,
            Some(t) => mix64(t ^ 0xA5A5_A5A5_A5A5_A5A5),
        };
        (u128::from(set.0 ^ h) << 64) | u128::from(set.1 ^ mix64(h))
    };

    let mut list = EventList::new(&ops);
    let mut memo: HashSet<u128, BuildHasherDefault<FingerprintHasher>> = HashSet::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state: Value = None;
    let mut set = (0u64, 0u64);
    let mut done = 0usize; // linearized ops with a known return
    let mut steps = 0u64;
    // Deepest point reached, for the violation message.
    let mut best: Option<(usize, usize)> = None; // (linearized, blocking op)
    let mut node = list.next[HEAD];
    loop {
        if done == total_finite {
            return Verdict::Linearizable;
        }
        if steps >= budget {
            return Verdict::Unknown;
        }
        steps += 1;

        if node == NIL || list.is_return[node] {
            // An op that had to take effect by now could not: backtrack.
            if node != NIL && best.is_none_or(|(d, _)| done > d) {
                best = Some((done, list.op[node]));
            }
            loop {
                let Some(fr) = stack.pop() else {
                    return Verdict::Violation(violation_text(&ops, total_finite, best, steps));
                };
                list.unlift(fr.op);
                state = fr.state;
                set = fr.set;
                if !ops[fr.op].pending() {
                    done -= 1;
                }
                if !matches!(ops[fr.op].kind, OpKind::Read(_)) {
                    node = list.next[list.call_node[fr.op]];
                    break;
                }
            }
            continue;
        }

        let i = list.op[node];
        if let Some(new_state) = apply(state, &ops[i].kind) {
            let new_set = (set.0 ^ zobrist[i].0, set.1 ^ zobrist[i].1);
            if memo.insert(fingerprint(new_set, new_state)) {
                stack.push(Frame { op: i, state, set });
                list.lift(i);
                state = new_state;
                set = new_set;
                if !ops[i].pending() {
                    done += 1;
                }
                node = list.next[HEAD];
                continue;
            }
        }
        node = list.next[node];
    }
}

fn violation_text(
    ops: &[KeyOp],
    total_finite: usize,
    best: Option<(usize, usize)>,
    steps: u64,
) -> String {
    let mut s = format!(
        "no linearization of its {} ops exists (exhaustive search, {} steps)",
        ops.len(),
        steps
    );
    if let Some((done, op)) = best {
        s.push_str(&format!(
            "; at best {} of {} completed ops could be ordered before {} had to take effect",
            done,
            total_finite,
            describe(&ops[op])
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- history builders -------------------------------------------------

    fn op(kind: OpKind, call: u64, ret: Option<u64>) -> Op {
        Op {
            key: 1,
            process: 0,
            call_ns: call,
            return_ns: ret,
            end_ns: ret.unwrap_or(call),
            kind,
        }
    }
    fn w(tag: u64, call: u64, ret: u64) -> Op {
        op(OpKind::Write(tag), call, Some(ret))
    }
    fn w_unknown(tag: u64, call: u64) -> Op {
        op(OpKind::Write(tag), call, None)
    }
    fn r(v: Option<u64>, call: u64, ret: u64) -> Op {
        op(OpKind::Read(v), call, Some(ret))
    }
    /// A delete whose answer says nothing (a copy's answer).
    fn d(call: u64, ret: u64) -> Op {
        op(OpKind::Delete(None), call, Some(ret))
    }
    fn d_found(existed: bool, call: u64, ret: u64) -> Op {
        op(OpKind::Delete(Some(existed)), call, Some(ret))
    }
    fn d_unknown(call: u64) -> Op {
        op(OpKind::Delete(None), call, None)
    }

    fn ok(h: &[Op]) -> bool {
        let rep = check(h);
        assert_eq!(rep.unchecked_keys, 0, "{rep:?}");
        assert_eq!(rep.examples.len() as u64, rep.violations.min(5));
        rep.violations == 0
    }

    fn assert_ok(h: &[Op]) {
        let rep = check(h);
        assert_eq!(rep.violations, 0, "expected linearizable: {rep:?}");
        assert_eq!(rep.unchecked_keys, 0);
        assert!(brute_force(h), "brute force disagrees");
    }

    fn assert_violation(h: &[Op]) {
        let rep = check(h);
        assert_eq!(rep.violations, 1, "expected a violation: {rep:?}");
        assert_eq!(rep.examples.len(), 1);
        assert!(!brute_force(h), "brute force disagrees");
    }

    // ---- hand-made histories ---------------------------------------------

    #[test]
    fn empty_history() {
        assert_eq!(check(&[]), CheckReport::default());
    }

    #[test]
    fn sequential_ok() {
        assert_ok(&[
            w(1, 0, 10),
            r(Some(1), 20, 30),
            w(2, 40, 50),
            r(Some(2), 60, 70),
        ]);
    }

    #[test]
    fn stale_read_after_completed_write() {
        assert_violation(&[w(1, 0, 10), w(2, 20, 30), r(Some(1), 40, 50)]);
        // Same but the read overlaps the second write: fine.
        assert_ok(&[w(1, 0, 10), w(2, 20, 30), r(Some(1), 25, 50)]);
    }

    #[test]
    fn read_of_never_written_tag() {
        assert_violation(&[w(1, 0, 10), r(Some(7), 20, 30)]);
        let rep = check(&[w(1, 0, 10), r(Some(7), 20, 30)]);
        assert!(rep.examples[0].contains("no write"), "{rep:?}");
        // Also on the general path (key has a delete).
        assert_violation(&[d(0, 1), w(1, 2, 10), r(Some(7), 20, 30)]);
    }

    #[test]
    fn read_returns_before_its_write_is_called() {
        assert_violation(&[r(Some(5), 0, 5), w(5, 10, 20)]);
        // Touching endpoints are concurrent: ok.
        assert_ok(&[r(Some(5), 0, 10), w(5, 10, 20)]);
    }

    #[test]
    fn concurrent_writes_read_in_both_orders() {
        let writes = [w(1, 0, 100), w(2, 0, 100)];
        // Reader A sees 1 then 2, reader B sees 2 then 1, all reads sequential
        // per reader and A/B reads pairwise overlapping in time: 1<2 and 2<1.
        let mut h = writes.to_vec();
        h.extend([r(Some(1), 10, 20), r(Some(2), 30, 40)]);
        h.extend([r(Some(2), 10, 20), r(Some(1), 30, 40)]);
        assert_violation(&h);
        // Same values, but every read overlaps every other one: ok.
        let mut h = writes.to_vec();
        h.extend([r(Some(1), 10, 40), r(Some(2), 10, 40)]);
        h.extend([r(Some(2), 10, 40), r(Some(1), 10, 40)]);
        assert_ok(&h);
    }

    #[test]
    fn unknown_outcome_writes() {
        // Read later: ok, even long after.
        assert_ok(&[w(1, 0, 10), w_unknown(2, 20), r(Some(2), 1000, 1010)]);
        // Never read: ok.
        assert_ok(&[w(1, 0, 10), w_unknown(2, 20), r(Some(1), 30, 40)]);
        // Read, then the older value again: violation.
        assert_violation(&[
            w(1, 0, 10),
            w_unknown(2, 20),
            r(Some(2), 100, 110),
            r(Some(1), 200, 210),
        ]);
        // Read before it was called: violation.
        assert_violation(&[w_unknown(2, 20), r(Some(2), 0, 10)]);
    }

    #[test]
    fn deletes() {
        // Stale read after a completed delete: violation.
        assert_violation(&[w(1, 0, 10), d(20, 30), r(Some(1), 40, 50)]);
        // Read concurrent with the delete may see either: ok.
        assert_ok(&[w(1, 0, 10), d(20, 30), r(Some(1), 25, 35)]);
        assert_ok(&[w(1, 0, 10), d(20, 30), r(None, 25, 35)]);
        assert_ok(&[w(1, 0, 10), d(20, 30), r(None, 40, 50)]);
        // Absent, then value, then absent again, then value again: violation.
        assert_violation(&[w(1, 0, 10), d(20, 30), r(None, 40, 50), r(Some(1), 60, 70)]);
        // Unknown-outcome delete that took effect, then the old value: violation.
        assert_violation(&[
            w(1, 0, 10),
            d_unknown(20),
            r(None, 30, 40),
            r(Some(1), 50, 60),
        ]);
        // Unknown-outcome delete observed late: ok.
        assert_ok(&[
            w(1, 0, 10),
            d_unknown(20),
            r(Some(1), 30, 40),
            r(None, 50, 60),
        ]);
    }

    #[test]
    fn initial_absent_reads() {
        assert_ok(&[r(None, 0, 5), w(1, 10, 20), r(Some(1), 30, 40)]);
        assert_ok(&[r(None, 0, 0)]);
        // Concurrent with the first write: either answer is fine.
        assert_ok(&[w(1, 10, 20), r(None, 15, 25), r(Some(1), 12, 18)]);
        // Absent after the first write completed: violation.
        assert_violation(&[w(1, 10, 20), r(None, 30, 40)]);
        // The initial state is before everything, even at time 0.
        assert_violation(&[w(1, 0, 5), r(Some(1), 0, 1), r(None, 2, 3)]);
    }

    #[test]
    fn unknown_outcome_reads_are_dropped() {
        let h = [w(1, 0, 10), op(OpKind::Read(Some(99)), 20, None)];
        let rep = check(&h);
        assert_eq!(rep.violations, 0);
        assert_eq!(rep.checked_ops, 1);
        assert_eq!(rep.keys, 1);
        // A key with only unknown reads is not a key that was checked.
        let rep = check(&[op(OpKind::Read(None), 0, None)]);
        assert_eq!(rep, CheckReport::default());
    }

    #[test]
    fn malformed_return_before_call_is_clamped() {
        // Write "returned" before it was called: treated as instantaneous at 10.
        assert_ok(&[w(1, 10, 5), r(Some(1), 11, 12)]);
        assert_violation(&[w(1, 10, 5), r(None, 11, 12)]);
        assert_ok(&[d(10, 0), r(None, 11, 12)]);
        // Extreme times don't overflow.
        assert_ok(&[w(1, u64::MAX, 0), r(Some(1), u64::MAX, u64::MAX)]);
    }

    #[test]
    fn budget_exhaustion_is_unchecked_not_ok() {
        let h = [w(1, 0, 10), d(20, 30), r(None, 40, 50), w(2, 60, 70)];
        let rep = check_with_budget(&h, 1);
        assert_eq!(
            rep,
            CheckReport {
                unchecked_keys: 1,
                ..CheckReport::default()
            }
        );
        // The fast path needs no budget.
        let rep = check_with_budget(&[w(1, 0, 10), r(Some(1), 20, 30)], 0);
        assert_eq!(rep.keys, 1);
        assert_eq!(rep.checked_ops, 2);
    }

    /// What only a delete's answer can explain keeps an unknown-outcome op in the search.
    #[test]
    fn unknown_ops_a_delete_answer_observes_are_kept() {
        assert_ok(&[w_unknown(5, 0), d_found(true, 20, 30)]);
        assert_ok(&[w(1, 0, 10), d_unknown(20), d_found(false, 30, 40)]);
        assert_violation(&[w(1, 0, 10), d_found(false, 30, 40)]);
    }

    /// A client cut off from its shard's owner leaves dozens of writes and deletes of open
    /// outcome; one delete answered long before them must not make the search try every
    /// subset of them before the last read.
    #[test]
    fn open_ops_nothing_observed_do_not_blow_up_the_search() {
        let mut h = vec![w(1, 0, 10), d_found(true, 20, 30), w(2, 40, 50)];
        for i in 0..40 {
            h.push(if i % 7 == 3 {
                d_unknown(60 + i)
            } else {
                w_unknown(100 + i, 60 + i)
            });
        }
        h.push(r(Some(2), 200, 210));
        let rep = check(&h);
        assert_eq!((rep.violations, rep.unchecked_keys), (0, 0), "{rep:?}");
        h.push(r(Some(1), 220, 230));
        let rep = check(&h);
        assert_eq!((rep.violations, rep.unchecked_keys), (1, 0), "{rep:?}");
    }

    #[test]
    fn duplicate_write_tags_use_the_search() {
        // Not produced by the client, but must not confuse the checker.
        assert_ok(&[w(1, 0, 10), w(2, 20, 30), w(1, 40, 50), r(Some(1), 60, 70)]);
        assert_violation(&[w(1, 0, 10), w(2, 20, 30), r(Some(1), 40, 50)]);
    }

    #[test]
    fn keys_are_independent_and_examples_capped() {
        let mut h = Vec::new();
        for key in 0..8u64 {
            let bad = key % 2 == 0; // keys 0,2,4,6 violate
            let mut ops = vec![w(1, 0, 10), w(2, 20, 30)];
            ops.push(r(Some(if bad { 1 } else { 2 }), 40, 50));
            if key >= 4 {
                ops.push(d(60, 70)); // general path for keys 4..8
            }
            h.extend(ops.into_iter().map(|mut o| {
                o.key = key;
                o
            }));
        }
        h.push(Op {
            key: 100,
            ..r(Some(3), 0, 1)
        }); // key 100 violates too
        let rep = check(&h);
        assert_eq!(rep.keys, 9);
        assert_eq!(rep.violations, 5);
        assert_eq!(rep.unchecked_keys, 0);
        assert_eq!(rep.checked_ops, h.len() as u64);
        assert_eq!(rep.examples.len(), 5);
        assert!(rep.examples[0].starts_with("key 0:"));
        assert!(rep.examples.iter().any(|e| e.starts_with("key 100:")));
    }

    /// A delete's answer is a read of the key just before it: NOT_FOUND of a key written
    /// before, or OK of a key deleted before, is not linearizable.
    #[test]
    fn a_delete_answer_is_checked_like_a_read() {
        assert!(ok(&[w(1, 0, 10), d_found(true, 20, 30), r(None, 40, 50)]));
        assert!(!ok(&[w(1, 0, 10), d_found(false, 20, 30)]));
        assert!(ok(&[
            d_found(false, 0, 10),
            w(1, 20, 30),
            d_found(true, 40, 50)
        ]));
        assert!(!ok(&[w(1, 0, 10), d(20, 30), d_found(true, 40, 50)]));
        // Concurrent with the write, either answer can be right.
        assert!(ok(&[w(1, 0, 30), d_found(false, 10, 20)]));
        assert!(ok(&[w(1, 0, 30), d_found(true, 10, 20)]));
        // A write of unknown outcome may explain an OK.
        assert!(ok(&[w_unknown(1, 0), d_found(true, 20, 30)]));
    }

    #[test]
    fn examples_name_the_ops() {
        let rep = check(&[w(1, 0, 10), w(2, 20, 30), r(Some(1), 40, 50)]);
        let e = &rep.examples[0];
        assert!(e.contains("op #0") && e.contains("op #2"), "{e}");
        let rep = check(&[w(1, 0, 10), d(20, 30), r(Some(1), 40, 50)]);
        assert!(rep.examples[0].contains("op #2"), "{:?}", rep.examples);
    }

    // ---- long histories ---------------------------------------------------

    /// Simulates `clients` sequential clients on one key: each op gets a
    /// linearization point inside its interval, applied in point order, so
    /// the history is linearizable by construction.
    fn simulate(rng: &mut fastrand::Rng, n: usize, clients: usize, delete_pct: u8) -> Vec<Op> {
        let mut free_at = vec![0u64; clients];
        let mut last_point = 0u64;
        let mut value: Option<u64> = None;
        let mut next_tag = 1u64;
        let mut h = Vec::with_capacity(n);
        for _ in 0..n {
            let c = (0..clients).min_by_key(|&c| free_at[c]).unwrap();
            let call = free_at[c];
            let point = (call + rng.u64(0..5)).max(last_point + 1);
            last_point = point;
            let roll = rng.u8(0..100);
            let kind = if roll < delete_pct {
                let existed = value.is_some();
                value = None;
                OpKind::Delete(Some(existed))
            } else if roll < 40 {
                value = Some(next_tag);
                next_tag += 1;
                OpKind::Write(next_tag - 1)
            } else {
                OpKind::Read(value)
            };
            let ret = point + rng.u64(0..5);
            free_at[c] = ret + rng.u64(0..3);
            h.push(Op {
                key: 7,
                process: c as u64,
                call_ns: call,
                return_ns: Some(ret),
                end_ns: ret,
                kind,
            });
        }
        h
    }

    #[test]
    fn long_hot_key_fast_path() {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut h = simulate(&mut rng, 200_000, 4, 0);
        let rep = check(&h);
        assert_eq!(
            rep,
            CheckReport {
                checked_ops: 200_000,
                keys: 1,
                ..CheckReport::default()
            }
        );
        // Corrupt one read in the middle to see an older value.
        let i = (100_000..)
            .find(|&i| matches!(h[i].kind, OpKind::Read(Some(t)) if t > 10))
            .unwrap();
        if let OpKind::Read(Some(t)) = h[i].kind {
            h[i].kind = OpKind::Read(Some(t - 10));
        }
        let rep = check(&h);
        assert_eq!(rep.violations, 1, "{rep:?}");
    }

    #[test]
    fn long_hot_key_with_deletes_general_path() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut h = simulate(&mut rng, 20_000, 4, 10);
        h[100].return_ns = None; // an unknown outcome in the middle
        let rep = check(&h);
        assert_eq!(rep.unchecked_keys, 0, "{rep:?}");
        assert_eq!(rep.violations, 0, "{rep:?}");
        assert_eq!(
            rep.checked_ops,
            h.len() as u64 - u64::from(matches!(h[100].kind, OpKind::Read(_)))
        );
        // A stale read of a value deleted long ago.
        let i = (10_000..)
            .find(|&i| matches!(h[i].kind, OpKind::Read(Some(t)) if t > 50))
            .unwrap();
        if let OpKind::Read(Some(t)) = h[i].kind {
            h[i].kind = OpKind::Read(Some(t - 50));
        }
        let rep = check(&h);
        assert_eq!(rep.violations, 1, "{rep:?}");
    }

    // ---- brute force reference -------------------------------------------

    /// Reference checker: tries every subset of unknown-outcome writes/deletes
    /// as "took effect" and every order of the included ops consistent with
    /// real time, simulating the register. Exponential; for tiny histories.
    fn brute_force(history: &[Op]) -> bool {
        let ops: Vec<KeyOp> = history
            .iter()
            .enumerate()
            .filter(|(_, o)| !(matches!(o.kind, OpKind::Read(_)) && o.return_ns.is_none()))
            .map(|(i, o)| KeyOp::new(i, o))
            .collect();
        let pending: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].pending()).collect();
        (0u32..1 << pending.len()).any(|mask| {
            let included: Vec<&KeyOp> = (0..ops.len())
                .filter(|&i| match pending.iter().position(|&p| p == i) {
                    Some(k) => mask & (1 << k) != 0,
                    None => true,
                })
                .map(|i| &ops[i])
                .collect();
            orders(&included, 0, None)
        })
    }

    fn orders(ops: &[&KeyOp], placed: u32, state: Option<u64>) -> bool {
        if placed.count_ones() as usize == ops.len() {
            return true;
        }
        (0..ops.len()).any(|j| {
            if placed & (1 << j) != 0 {
                return false;
            }
            // Every op that must precede j in real time is already placed.
            let ready = (0..ops.len())
                .all(|k| k == j || placed & (1 << k) != 0 || ops[k].ret >= ops[j].call);
            ready
                && match apply(state, &ops[j].kind) {
                    Some(s) => orders(ops, placed | (1 << j), s),
                    None => false,
                }
        })
    }

    fn random_history(rng: &mut fastrand::Rng, deletes: bool) -> Vec<Op> {
        let n = rng.usize(1..=7);
        let span = rng.u64(2..25);
        let mut tags: Vec<u64> = Vec::new();
        let mut h: Vec<Op> = (0..n)
            .map(|_| {
                let call = rng.u64(0..span);
                let ret = match rng.u8(0..100) {
                    0..=14 => None,
                    15..=17 => Some(call.saturating_sub(rng.u64(0..3))), // malformed
                    _ => Some(call + rng.u64(0..=span / 2 + 1)),
                };
                let kind = match rng.u8(0..100) {
                    0..=39 => {
                        // Mostly fresh tags, rarely a repeated one.
                        let t = if !tags.is_empty() && rng.u8(0..100) < 3 {
                            tags[rng.usize(0..tags.len())]
                        } else {
                            tags.len() as u64 + 1
                        };
                        tags.push(t);
                        OpKind::Write(t)
                    }
                    40..=54 if deletes => OpKind::Delete(match rng.u8(0..3) {
                        0 => None,
                        1 => Some(true),
                        _ => Some(false),
                    }),
                    _ => OpKind::Read(None), // value chosen below
                };
                op(kind, call, ret)
            })
            .collect();
        for o in &mut h {
            if let OpKind::Read(v) = &mut o.kind {
                *v = match rng.u8(0..100) {
                    0..=1 => Some(999), // never written
                    2..=29 => None,
                    _ if tags.is_empty() => None,
                    _ => Some(tags[rng.usize(0..tags.len())]),
                };
            }
        }
        h
    }

    #[test]
    fn random_small_histories_agree_with_brute_force() {
        let mut rng = fastrand::Rng::with_seed(0x11CE_CEC4);
        let (mut positives, mut negatives) = (0, 0);
        for case in 0..40_000 {
            let h = random_history(&mut rng, case % 2 == 0);
            let expected = brute_force(&h);
            assert_eq!(ok(&h), expected, "case {case}: {h:#?}\n{:?}", check(&h));
            if expected {
                positives += 1;
            } else {
                negatives += 1;
            }
            // Both internal paths must agree with the reference where they apply.
            let ops: Vec<KeyOp> = h
                .iter()
                .enumerate()
                .filter(|(_, o)| !(matches!(o.kind, OpKind::Read(_)) && o.return_ns.is_none()))
                .map(|(i, o)| KeyOp::new(i, o))
                .collect();
            assert_eq!(
                search(&ops, u64::MAX).is_ok(),
                Some(expected),
                "case {case} search: {h:#?}"
            );
            if !ops.iter().any(|o| matches!(o.kind, OpKind::Delete(_))) {
                assert_eq!(
                    gibbons_korach(&ops).is_ok(),
                    Some(expected),
                    "case {case} GK: {h:#?}"
                );
            }
        }
        // The generator must exercise both outcomes substantially.
        assert!(
            positives > 5_000 && negatives > 5_000,
            "{positives} / {negatives}"
        );
    }

    #[test]
    fn random_multi_key_histories_compose() {
        let mut rng = fastrand::Rng::with_seed(99);
        for _ in 0..300 {
            let mut h = Vec::new();
            let mut expected_violations = 0;
            for key in 0..rng.u64(1..6) {
                let deletes = rng.bool();
                let part = random_history(&mut rng, deletes);
                if !brute_force(&part) {
                    expected_violations += 1;
                }
                h.extend(part.into_iter().map(|o| Op { key, ..o }));
            }
            rng.shuffle(&mut h);
            // Op ids in messages change with the shuffle, verdicts must not.
            assert_eq!(check(&h).violations, expected_violations);
        }
    }
}
