//! Random generators for keys and operations, ported from YCSB's
//! `site.ycsb.generator` package so that results are comparable with YCSB.
//!
//! Every generator owns its own `fastrand::Rng` and is meant to be owned by
//! one client thread (no locking on the hot path); all are deterministic
//! for a given seed. Build one per thread with `new`, or build one and
//! `fork` it to share expensive set-up (a Zipfian zeta sum) across threads.

use fastrand::Rng;

use super::spec::{Distribution, WorkloadSpec};

/// YCSB's `Utils.fnvhash64`: FNV-1a over the 8 bytes of the value, lowest
/// byte first, then `Math.abs` of the result read as a signed long.
///
/// Java's `Math.abs(Long.MIN_VALUE)` stays negative, which would make YCSB
/// produce a negative key in that (1 in 2^64) case; here the result is
/// the unsigned magnitude, 2^63, so `fnvhash64(v) % n` is always `< n`.
pub fn fnvhash64(val: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    for octet in val.to_le_bytes() {
        hash ^= u64::from(octet);
        hash = hash.wrapping_mul(PRIME);
    }
    (hash as i64).unsigned_abs()
}

/// Terms summed one by one before switching to an asymptotic formula.
const EXACT_ZETA_TERMS: u64 = 1 << 20;

/// zeta(n, theta) = sum_{i=1..n} 1 / i^theta, the Zipfian normaliser.
pub fn zeta(n: u64, theta: f64) -> f64 {
    zeta_extend(0, n, theta, 0.0)
}

/// Adds the terms for items `st..n` (i.e. `1/(st+1)^theta .. 1/n^theta`)
/// to `initial`, as YCSB's incremental `zetastatic(st, n, theta, initial)`.
///
/// Like YCSB, the first 2^20 terms are summed in order (so results match it
/// bit for bit for small key spaces). Beyond that, instead of looping over
/// up to billions of terms (YCSB takes minutes for 10^8 records), the rest
/// is the Euler-Maclaurin formula up to the third derivative, whose error is
/// below 1e-30 relative at that starting point.
fn zeta_extend(st: u64, n: u64, theta: f64, initial: f64) -> f64 {
    if n <= st {
        return initial;
    }
    let mut sum = initial;
    let exact_end = if n - st <= EXACT_ZETA_TERMS {
        n
    } else {
        st.max(EXACT_ZETA_TERMS.min(n))
    };
    for i in st..exact_end {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    if exact_end < n {
        // sum_{j=a..b} f(j), f(x) = x^-theta, with a = exact_end + 1, b = n.
        let (a, b) = ((exact_end + 1) as f64, n as f64);
        let f = |x: f64| x.powf(-theta);
        let f1 = |x: f64| -theta * x.powf(-theta - 1.0);
        let f3 = |x: f64| -theta * (theta + 1.0) * (theta + 2.0) * x.powf(-theta - 3.0);
        let integral = (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta);
        sum += integral + (f(a) + f(b)) / 2.0 + (f1(b) - f1(a)) / 12.0 - (f3(b) - f3(a)) / 720.0;
    }
    sum
}

/// YCSB's `ZipfianGenerator` (Gray et al., "Quickly Generating
/// Billion-Record Synthetic Databases", SIGMOD 1994): items in `[0, n)`,
/// item 0 the most popular, P(i) proportional to 1/(i+1)^theta.
///
/// The item count may grow (`next_n` with a larger n, as for the `latest`
/// distribution while records are inserted): zeta is then extended
/// incrementally rather than recomputed. One deliberate difference: YCSB
/// recomputes `eta` with the item count given at construction (a bug);
/// here it uses the current count, as in the paper.
#[derive(Debug, Clone)]
pub struct Zipfian {
    rng: Rng,
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    zeta2theta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    /// Zipfian over `items` items. Computes zeta(items), which costs up to
    /// ~2^20 `powf` calls; see `with_zetan` to skip that.
    ///
    /// Panics unless `items >= 1` and `0 <= theta < 1`.
    pub fn new(items: u64, theta: f64, seed: u64) -> Zipfian {
        Self::with_zetan(items, theta, zeta(items, theta), seed)
    }

    /// Zipfian with a precomputed zeta(items, theta).
    pub fn with_zetan(items: u64, theta: f64, zetan: f64, seed: u64) -> Zipfian {
        assert!(items >= 1, "a Zipfian needs at least one item");
        assert!(
            (0.0..1.0).contains(&theta),
            "zipfian constant must be in [0, 1), got {theta}"
        );
        let zeta2theta = zeta(2, theta);
        Zipfian {
            rng: Rng::with_seed(seed),
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: eta(items, theta, zeta2theta, zetan),
            zeta2theta,
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    /// Restarts the random sequence (keeps the precomputed constants).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::with_seed(seed);
    }

    /// The item count zeta is currently computed for.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// zeta(items, theta); 1/zetan is the probability of item 0.
    pub fn zetan(&self) -> f64 {
        self.zetan
    }

    /// The Zipfian constant.
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// Next item in `[0, items)`.
    // Infinite generator: an `Iterator` would force an `Option` on the hot path.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.next_n(self.items)
    }

    /// Next item in `[0, item_count)`. A larger count than before extends
    /// zeta incrementally. A smaller one (another thread's stale count)
    /// keeps the larger zeta, as YCSB does, and the result is clamped.
    pub fn next_n(&mut self, item_count: u64) -> u64 {
        assert!(item_count >= 1, "a Zipfian needs at least one item");
        if item_count > self.items {
            self.zetan = zeta_extend(self.items, item_count, self.theta, self.zetan);
            self.items = item_count;
            self.eta = eta(item_count, self.theta, self.zeta2theta, self.zetan);
        }
        let u = self.rng.f64();
        let uz = u * self.zetan;
        let ret = if uz < 1.0 {
            0
        } else if uz < 1.0 + self.half_pow_theta {
            1
        } else {
            (item_count as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64
        };
        ret.min(item_count - 1)
    }
}

fn eta(items: u64, theta: f64, zeta2theta: f64, zetan: f64) -> f64 {
    (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2theta / zetan)
}

/// YCSB's `ScrambledZipfianGenerator`: Zipfian popularity, but with the
/// popular items scattered over `[0, n)` (via `fnvhash64(v) % n`) instead of
/// clustered at 0, so hot keys land on different partitions.
///
/// For theta = 0.99 it reproduces YCSB's shortcut: an underlying Zipfian
/// over `ITEM_COUNT` = 10^10 items with the precomputed `ZETAN`. This makes
/// set-up O(1) and the hot set independent of n, but it also flattens the
/// head: the top key gets about 1/ZETAN = 3.8% of requests whatever n is
/// (not 1/zeta(n)). Recent YCSB raised ITEM_COUNT to 10^16 but kept this
/// ZETAN, which is zeta(10^10); we keep the consistent pair. For other
/// thetas zeta is computed over n itself, as the spec asks (YCSB would
/// compute it over ITEM_COUNT).
#[derive(Debug, Clone)]
pub struct ScrambledZipfian {
    gen: Zipfian,
    items: u64,
}

impl ScrambledZipfian {
    /// zeta(ITEM_COUNT, 0.99), precomputed by YCSB.
    pub const ZETAN: f64 = 26.46902820178302;
    /// Theta for which `ZETAN` applies.
    pub const USED_ZIPFIAN_CONSTANT: f64 = 0.99;
    /// Size of the underlying item space for theta = 0.99.
    pub const ITEM_COUNT: u64 = 10_000_000_000;

    /// Scrambled Zipfian over `[0, items)`. Panics unless `items >= 1` and
    /// `0 <= theta < 1`.
    pub fn new(items: u64, theta: f64, seed: u64) -> ScrambledZipfian {
        assert!(items >= 1, "a Zipfian needs at least one item");
        let gen = if theta == Self::USED_ZIPFIAN_CONSTANT {
            Zipfian::with_zetan(Self::ITEM_COUNT, theta, Self::ZETAN, seed)
        } else {
            Zipfian::new(items, theta, seed)
        };
        ScrambledZipfian { gen, items }
    }

    /// Restarts the random sequence.
    pub fn reseed(&mut self, seed: u64) {
        self.gen.reseed(seed);
    }

    /// The n of `[0, n)`.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Next item in `[0, items)`.
    // Infinite generator: an `Iterator` would force an `Option` on the hot path.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        fnvhash64(self.gen.next()) % self.items
    }
}

/// YCSB's `SkewedLatestGenerator`: recency-skewed popularity, the newest
/// record being the most popular (YCSB workload d).
///
/// YCSB returns `max - zipfian(max)` with `max` the highest acknowledged
/// record number. Here the caller passes the number of existing records
/// `insert_count`, so the newest record is `insert_count - 1` and the result
/// is `(insert_count - 1) - zipfian(insert_count)`, always an existing record.
#[derive(Debug, Clone)]
pub struct SkewedLatest {
    gen: Zipfian,
}

impl SkewedLatest {
    /// `initial_count` records exist at the start (zeta is computed for it).
    pub fn new(initial_count: u64, theta: f64, seed: u64) -> SkewedLatest {
        SkewedLatest {
            gen: Zipfian::new(initial_count.max(1), theta, seed),
        }
    }

    /// Restarts the random sequence.
    pub fn reseed(&mut self, seed: u64) {
        self.gen.reseed(seed);
    }

    /// A record in `[0, insert_count)`, most likely `insert_count - 1`.
    pub fn next(&mut self, insert_count: u64) -> u64 {
        assert!(insert_count >= 1, "no records to choose from");
        (insert_count - 1) - self.gen.next_n(insert_count)
    }
}

/// Uniform choice over `[0, n)`, with n given per call so newly inserted
/// records become eligible immediately.
#[derive(Debug, Clone)]
pub struct Uniform {
    rng: Rng,
}

impl Uniform {
    pub fn new(seed: u64) -> Uniform {
        Uniform {
            rng: Rng::with_seed(seed),
        }
    }

    /// Restarts the random sequence.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::with_seed(seed);
    }

    /// A value in `[0, n)`. Panics if `n == 0`.
    pub fn next(&mut self, n: u64) -> u64 {
        assert!(n >= 1, "no records to choose from");
        self.rng.u64(0..n)
    }
}

/// A key-value operation the client issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Update,
    Insert,
    ReadModifyWrite,
    Delete,
}

impl Operation {
    /// All operations, in the order used by reports.
    pub const ALL: [Operation; 5] = [
        Operation::Read,
        Operation::Update,
        Operation::Insert,
        Operation::ReadModifyWrite,
        Operation::Delete,
    ];

    /// YCSB's name for the operation (as in its reports).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Update => "UPDATE",
            Operation::Insert => "INSERT",
            Operation::ReadModifyWrite => "READ-MODIFY-WRITE",
            Operation::Delete => "DELETE",
        }
    }
}

/// YCSB's `DiscreteGenerator` over operations: weights are normalised by
/// their sum, so proportions that do not add up to 1 still work as in YCSB.
#[derive(Debug, Clone)]
pub struct OperationChooser {
    rng: Rng,
    /// Operations with positive weight and their cumulative probability.
    cumulative: Vec<(Operation, f64)>,
}

impl OperationChooser {
    /// The operation mix of a (validated) spec. Panics if no proportion is
    /// positive, which `WorkloadSpec::validate` rejects.
    pub fn new(spec: &WorkloadSpec, seed: u64) -> OperationChooser {
        Self::from_weights(
            &[
                (Operation::Read, spec.read),
                (Operation::Update, spec.update),
                (Operation::Insert, spec.insert),
                (Operation::ReadModifyWrite, spec.rmw),
                (Operation::Delete, spec.delete),
            ],
            seed,
        )
    }

    /// A chooser from explicit weights. Panics unless the positive, finite
    /// weights have a positive sum.
    pub fn from_weights(weights: &[(Operation, f64)], seed: u64) -> OperationChooser {
        let usable = || weights.iter().filter(|(_, w)| w.is_finite() && *w > 0.0);
        let sum: f64 = usable().map(|(_, w)| w).sum();
        assert!(
            sum > 0.0,
            "no operation has a positive proportion (validate the spec first)"
        );
        let mut acc = 0.0;
        let cumulative = usable()
            .map(|&(op, w)| {
                acc += w / sum;
                (op, acc)
            })
            .collect();
        OperationChooser {
            rng: Rng::with_seed(seed),
            cumulative,
        }
    }

    /// Restarts the random sequence.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::with_seed(seed);
    }

    /// A copy with the same mix and its own random sequence (one per thread).
    pub fn fork(&self, seed: u64) -> OperationChooser {
        let mut c = self.clone();
        c.reseed(seed);
        c
    }

    /// Probability of `op` (after normalisation).
    pub fn probability(&self, op: Operation) -> f64 {
        let mut prev = 0.0;
        for &(o, c) in &self.cumulative {
            if o == op {
                return c - prev;
            }
            prev = c;
        }
        0.0
    }

    /// Next operation.
    // Infinite generator: an `Iterator` would force an `Option` on the hot path.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Operation {
        let u = self.rng.f64();
        for &(op, c) in &self.cumulative {
            if u < c {
                return op;
            }
        }
        // Only reachable when rounding leaves the last cumulative below 1.
        self.cumulative[self.cumulative.len() - 1].0
    }
}

/// Redraws of the Zipfian chooser before falling back (see `KeyChooser`).
const MAX_REDRAWS: u32 = 64;

/// Chooses the record for reads, updates and read-modify-writes according
/// to the spec's request distribution. The caller passes the number of
/// records that currently exist (`record_count` + completed inserts, shared
/// by all threads in an `AtomicU64`), and the result is always below it.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    /// Scrambled Zipfian over `WorkloadSpec::zipfian_key_space` records,
    /// fixed for the run so the hot keys stay the same. As in YCSB's
    /// CoreWorkload, a draw of a record not inserted yet is redrawn; after
    /// `MAX_REDRAWS` misses (only when far more inserts than loaded records
    /// are expected) the draw is folded into range with `% insert_count`.
    Zipfian(ScrambledZipfian),
    /// Uniform over the records that exist now.
    Uniform(Uniform),
    /// Newest records most popular.
    Latest(SkewedLatest),
}

impl KeyChooser {
    /// Builds the chooser for a (validated) spec. For `latest`, and for
    /// `zipfian` with a theta other than 0.99, this computes a zeta sum
    /// (bounded cost, see `zeta`); build once and `fork` per thread.
    pub fn new(spec: &WorkloadSpec, seed: u64) -> KeyChooser {
        match spec.distribution {
            Distribution::Zipfian => KeyChooser::Zipfian(ScrambledZipfian::new(
                spec.zipfian_key_space().max(1),
                spec.zipf_theta,
                seed,
            )),
            Distribution::Uniform => KeyChooser::Uniform(Uniform::new(seed)),
            Distribution::Latest => {
                KeyChooser::Latest(SkewedLatest::new(spec.record_count, spec.zipf_theta, seed))
            }
        }
    }

    /// A copy with the same set-up and its own random sequence.
    pub fn fork(&self, seed: u64) -> KeyChooser {
        let mut c = self.clone();
        match &mut c {
            KeyChooser::Zipfian(g) => g.reseed(seed),
            KeyChooser::Uniform(g) => g.reseed(seed),
            KeyChooser::Latest(g) => g.reseed(seed),
        }
        c
    }

    /// Which distribution this is.
    pub fn distribution(&self) -> Distribution {
        match self {
            KeyChooser::Zipfian(_) => Distribution::Zipfian,
            KeyChooser::Uniform(_) => Distribution::Uniform,
            KeyChooser::Latest(_) => Distribution::Latest,
        }
    }

    /// A record number in `[0, insert_count)`. Panics if `insert_count == 0`.
    pub fn next_record(&mut self, insert_count: u64) -> u64 {
        assert!(insert_count >= 1, "no records to choose from");
        match self {
            KeyChooser::Zipfian(g) => {
                let mut v = g.next();
                for _ in 1..MAX_REDRAWS {
                    if v < insert_count {
                        return v;
                    }
                    v = g.next();
                }
                v % insert_count
            }
            KeyChooser::Uniform(g) => g.next(insert_count),
            KeyChooser::Latest(g) => g.next(insert_count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWS: usize = 1_000_000;

    fn counts(n: u64, mut draw: impl FnMut() -> u64) -> Vec<u64> {
        let mut c = vec![0u64; n as usize];
        for _ in 0..DRAWS {
            let v = draw();
            assert!(v < n, "draw {v} out of [0, {n})");
            c[v as usize] += 1;
        }
        c
    }

    fn argmax(c: &[u64]) -> usize {
        (0..c.len()).max_by_key(|&i| c[i]).unwrap()
    }

    fn share(count: u64) -> f64 {
        count as f64 / DRAWS as f64
    }

    /// Plain FNV-1a 64 over bytes, checked against published test vectors.
    fn fnv1a(bytes: &[u8]) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        h
    }

    #[test]
    fn fnvhash64_is_ycsb() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        for v in [0u64, 1, 255, 256, 0x0102_0304_0506_0708, u64::MAX, 1 << 63] {
            let h = fnv1a(&v.to_le_bytes()) as i64;
            assert_eq!(fnvhash64(v), h.unsigned_abs(), "v={v:#x}");
            assert!(fnvhash64(v) <= 1 << 63);
        }
        // Negative Java longs hash their two's-complement bytes.
        assert_eq!(fnvhash64(-1i64 as u64), fnvhash64(u64::MAX));
    }

    fn zeta_naive(n: u64, theta: f64) -> f64 {
        (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(theta)).sum()
    }

    #[test]
    fn zeta_exact_and_asymptotic() {
        assert_eq!(zeta(1, 0.99), 1.0);
        assert_eq!(zeta(2, 0.5), 1.0 + 1.0 / 2f64.sqrt());
        assert_eq!(zeta(1000, 0.99), zeta_naive(1000, 0.99));
        for theta in [0.0, 0.5, 0.99] {
            let n = 3_000_000;
            let (fast, slow) = (zeta(n, theta), zeta_naive(n, theta));
            assert!(
                ((fast - slow) / slow).abs() < 1e-12,
                "theta={theta}: {fast} vs {slow}"
            );
            // Incremental extension agrees with a fresh computation.
            let inc = zeta_extend(1000, n, theta, zeta(1000, theta));
            assert!(((inc - slow) / slow).abs() < 1e-12);
            let inc = zeta_extend(2_000_000, n, theta, zeta(2_000_000, theta));
            assert!(((inc - slow) / slow).abs() < 1e-12);
        }
        // YCSB's precomputed constant is zeta(10^10, 0.99).
        let z = zeta(ScrambledZipfian::ITEM_COUNT, 0.99);
        assert!((z - ScrambledZipfian::ZETAN).abs() < 1e-9, "{z}");
    }

    #[test]
    fn zipfian_matches_theory() {
        let n = 1000;
        let mut z = Zipfian::new(n, 0.99, 7);
        let zn = zeta(n, 0.99);
        assert_eq!(z.zetan(), zn);
        let c = counts(n, || z.next());
        assert_eq!(argmax(&c), 0);
        let p0 = 1.0 / zn;
        assert!(
            (share(c[0]) - p0).abs() < 0.1 * p0,
            "{} vs {p0}",
            share(c[0])
        );
        let p1 = 0.5f64.powf(0.99) / zn;
        assert!((share(c[1]) - p1).abs() < 0.1 * p1);
        // The head as a whole (Gray's formula is approximate past item 1).
        let head: u64 = c[..10].iter().sum();
        let p_head = zeta(10, 0.99) / zn;
        assert!((share(head) - p_head).abs() < 0.05 * p_head);
        assert!(c[n as usize - 1] > 0, "the tail is reachable");
    }

    #[test]
    fn zipfian_grows_incrementally() {
        let mut z = Zipfian::new(1000, 0.99, 1);
        for n in [1000, 1001, 1500, 1200, 5000] {
            for _ in 0..1000 {
                assert!(z.next_n(n) < n);
            }
        }
        assert_eq!(z.items(), 5000);
        let fresh = zeta(5000, 0.99);
        assert!((z.zetan() - fresh).abs() < 1e-12 * fresh);
        // Degenerate sizes.
        let mut z = Zipfian::new(1, 0.99, 1);
        assert!((0..100).all(|_| z.next() == 0));
        let mut z = Zipfian::new(2, 0.5, 1);
        let ones = (0..10_000).filter(|_| z.next() == 1).count();
        assert!((2500..4500).contains(&ones), "{ones}");
    }

    #[test]
    fn deterministic_per_seed() {
        let draw = |seed| {
            let mut z = Zipfian::new(1000, 0.99, seed);
            (0..100).map(|_| z.next()).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn scrambled_zipfian() {
        let n = 1000;
        let mut z = ScrambledZipfian::new(n, 0.99, 11);
        let c = counts(n, || z.next());
        let top = argmax(&c);
        assert_eq!(
            top as u64,
            fnvhash64(0) % n,
            "hot item is the scramble of item 0"
        );
        // YCSB's 0.99 shortcut: the top key gets about 1/ZETAN, plus its
        // share of the tail folded in by `% n`.
        let p = 1.0 / ScrambledZipfian::ZETAN;
        assert!(
            share(c[top]) > p && share(c[top]) < p * 1.15,
            "{}",
            share(c[top])
        );
        // Not clustered: the hottest 10 keys are spread out.
        let mut order: Vec<usize> = (0..c.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(c[i]));
        assert!(order[..10].iter().any(|&i| i >= 100));

        // Other thetas: zeta over n, so the top share is close to 1/zeta(n).
        let mut z = ScrambledZipfian::new(n, 0.8, 12);
        let c = counts(n, || z.next());
        let p = 1.0 / zeta(n, 0.8);
        let top = share(c[argmax(&c)]);
        assert!((top - p).abs() < 0.1 * p, "{top} vs {p}");
    }

    #[test]
    fn skewed_latest_prefers_newest() {
        let mut g = SkewedLatest::new(1000, 0.99, 5);
        let c = counts(1000, || g.next(1000));
        assert_eq!(argmax(&c), 999);
        let p = 1.0 / zeta(1000, 0.99);
        assert!((share(c[999]) - p).abs() < 0.1 * p);
        let newest_tenth: u64 = c[900..].iter().sum();
        assert!(share(newest_tenth) > 0.6, "{}", share(newest_tenth));

        // As records are inserted the hot spot moves with them.
        let c = counts(1500, || g.next(1500));
        assert_eq!(argmax(&c), 1499);
        assert!(c[..1000].iter().sum::<u64>() < c[1400..].iter().sum::<u64>());
        assert!((0..1000).all(|_| g.next(1) == 0));
    }

    #[test]
    fn uniform_bins() {
        let mut u = Uniform::new(9);
        let n = 1000;
        let c = counts(n, || u.next(n));
        let expected = DRAWS as f64 / 10.0;
        let mut chi2 = 0.0;
        for bin in c.chunks(100) {
            let got = bin.iter().sum::<u64>() as f64;
            assert!((got - expected).abs() < 0.05 * expected, "{got}");
            chi2 += (got - expected).powi(2) / expected;
        }
        // 99.9th percentile of chi-square with 9 degrees of freedom.
        assert!(chi2 < 27.88, "chi2={chi2}");
    }

    fn check_mix(chooser: &mut OperationChooser, expect: &[(Operation, f64)]) {
        let mut c = [0u64; 4];
        for _ in 0..DRAWS {
            let op = chooser.next();
            c[Operation::ALL.iter().position(|&o| o == op).unwrap()] += 1;
        }
        for &(op, p) in expect {
            let got = share(c[Operation::ALL.iter().position(|&o| o == op).unwrap()]);
            assert!((got - p).abs() < 0.01 * p.max(0.1), "{op:?}: {got} vs {p}");
            assert!((chooser.probability(op) - p).abs() < 1e-12);
        }
    }

    #[test]
    fn operation_proportions() {
        use Operation::*;
        let spec = WorkloadSpec::builtin("f").unwrap();
        let mut ch = OperationChooser::new(&spec, 21);
        check_mix(
            &mut ch,
            &[
                (Read, 0.5),
                (ReadModifyWrite, 0.5),
                (Update, 0.0),
                (Insert, 0.0),
            ],
        );

        let spec = WorkloadSpec {
            read: 0.5,
            update: 0.2,
            insert: 0.1,
            rmw: 0.2,
            ..WorkloadSpec::default()
        };
        check_mix(
            &mut OperationChooser::new(&spec, 22),
            &[
                (Read, 0.5),
                (Update, 0.2),
                (Insert, 0.1),
                (ReadModifyWrite, 0.2),
            ],
        );

        // Weights not summing to 1 are normalised, as YCSB does.
        let mut ch = OperationChooser::from_weights(&[(Read, 0.9), (Update, 0.5)], 23);
        check_mix(&mut ch, &[(Read, 0.9 / 1.4), (Update, 0.5 / 1.4)]);
        let mut other = ch.fork(24);
        let a: Vec<_> = (0..64).map(|_| ch.next()).collect();
        let b: Vec<_> = (0..64).map(|_| other.next()).collect();
        assert_ne!(a, b);
        assert_eq!(Operation::ReadModifyWrite.name(), "READ-MODIFY-WRITE");
    }

    #[test]
    #[should_panic(expected = "no operation has a positive proportion")]
    fn operation_chooser_rejects_empty_mix() {
        OperationChooser::from_weights(&[(Operation::Read, 0.0)], 1);
    }

    #[test]
    fn key_chooser_stays_in_range() {
        for name in ["a", "d"] {
            for dist in [
                Distribution::Zipfian,
                Distribution::Uniform,
                Distribution::Latest,
            ] {
                let mut spec = WorkloadSpec::builtin(name).unwrap();
                spec.distribution = dist;
                spec.insert = 0.3;
                spec.operation_count = Some(10_000);
                let base = KeyChooser::new(&spec, 1);
                assert_eq!(base.distribution(), dist);
                let mut k = base.fork(2);
                // Grows past the Zipfian key space (1000 + 6000) and also
                // sees stale, smaller counts.
                for insert_count in (1..12_000).step_by(7) {
                    for _ in 0..20 {
                        assert!(k.next_record(insert_count) < insert_count);
                    }
                }
                let seq =
                    |mut k: KeyChooser| (0..50).map(|_| k.next_record(1000)).collect::<Vec<_>>();
                assert_eq!(seq(base.fork(5)), seq(base.fork(5)), "deterministic");
                assert_ne!(seq(base.fork(5)), seq(base.fork(6)));
            }
        }
    }

    #[test]
    fn key_chooser_zipfian_without_inserts_is_scrambled_zipfian() {
        let spec = WorkloadSpec::builtin("c").unwrap();
        let mut k = KeyChooser::new(&spec, 3);
        let mut z = ScrambledZipfian::new(spec.record_count, spec.zipf_theta, 3);
        for _ in 0..1000 {
            assert_eq!(k.next_record(spec.record_count), z.next());
        }
        // While inserts are pending, unseen records are redrawn, not folded.
        let mut spec = WorkloadSpec::builtin("a").unwrap();
        spec.insert = 0.5;
        let mut k = KeyChooser::new(&spec, 4);
        let c = counts(1000, || k.next_record(1000));
        let space = spec.zipfian_key_space();
        assert_eq!(space, 2000);
        let hottest_existing = (0..)
            .map(|v| fnvhash64(v) % space)
            .find(|&r| r < 1000)
            .unwrap();
        assert_eq!(argmax(&c) as u64, hottest_existing);
    }
}
