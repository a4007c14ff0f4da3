//! Judging a recomputed result against the result it checks, with a
//! tolerance per output calibrated for the task at deploy time.
//!
//! Honest nodes differ: another precision (fp32, fp16, bf16), another
//! kernel, another accumulation order. A cheat differs too. The judge tells
//! them apart in three steps, each pure and deterministic:
//!
//! 1. **Elementwise.** An element of a float output *misses* when
//!    |a − b| > atol + rtol·|b|, `b` being the reference's (the validator's)
//!    value. NaN must meet NaN and an infinity the same infinity; anything
//!    else against a NaN or an infinity misses. Nothing is scaled by the
//!    tensor's largest value, so a few nudged elements among large ones are
//!    seen. Integer and boolean outputs miss where they differ at all.
//! 2. **Statistical.** One marginal miss is no proof of cheating. An output
//!    of n elements is judged a mismatch only when its misses exceed
//!    [`allowed_misses`]`(n, miss_rate)`: the count an honest node, whose
//!    elements each miss with probability at most `miss_rate`, exceeds with
//!    probability at most [`FALSE_ALARM`] (10⁻⁹). The count comes from the
//!    Chernoff bound P[X ≥ k] ≤ exp(−n·D(k/n ‖ p)) for X ~ Binomial(n, p),
//!    D the Kullback–Leibler divergence of two Bernoulli laws: closed form,
//!    deterministic, never below the exact binomial quantile (it errs on the
//!    honest node's side). Gonka's Proof-of-Compute uses the same kind of
//!    test over sampled tokens.
//! 3. **Indices judged with their values.** An integer output that is the
//!    argmax (or a sorted top-k) of a float output of the same result flips
//!    at near-ties between honest nodes. With an [`IndicesOf`] pairing, a
//!    differing index misses only when, in the *reference's* values, the
//!    value at the candidate's index is farther from the reference's
//!    j-th largest value than both values' tolerances together; the misses
//!    are then counted under rule 2. A pairing under a name that is not an
//!    output judges the argmax a greedy sampler would take of the float
//!    output (the tokens of logits), on top of its elementwise check.
//!
//! [`calibrate`] derives the tolerances from honest runs of the task (see
//! there); [`judge`] applies them; [`assess`] reports every check without
//! failing (for tables and logs).

use crate::{DType, Mismatch, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Probability, at most, that one honest output (or the indices of one
/// pairing) is judged a mismatch, given that its elements miss
/// independently with probability at most their calibrated `miss_rate`.
/// A task with m checks is falsely failed with probability at most m·10⁻⁹.
pub const FALSE_ALARM: f64 = 1e-9;
/// The smallest miss rate calibration gives a float output: one miss among
/// five or more elements is then always allowed, while outputs of one to
/// four elements stay exact in count.
pub const MISS_RATE_FLOOR: f64 = 1e-10;
/// Above this rate an output is not checked but guessed at: refused.
pub const MISS_RATE_MAX: f64 = 0.5;
/// A relative tolerance above 100 % accepts any value of the right sign: refused.
pub const RTOL_MAX: f64 = 1.0;
/// An absolute tolerance above 10¹² is refused: no output SplitUp compares
/// needs one (f16 ends at 65504), and a hostile one would accept anything.
pub const ATOL_MAX: f64 = 1e12;
/// The share of honest element differences the calibrated tolerance is fitted
/// to (before the safety factor); the rest is left to the miss rate. Kept
/// high: misses are counted over the whole output, so a miss rate earned by
/// many small elements would let a cheat change the few large ones.
pub const CALIBRATION_QUANTILE: f64 = 0.999;
/// Safety factors calibration accepts.
pub const SAFETY_MIN: f64 = 1.0;
pub const SAFETY_MAX: f64 = 1000.0;
/// Ratios of atol to rtol·RMS(output) that calibration tries (see [`calibrate`]).
const ATOL_SCALES: [f64; 10] = [0.0, 1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0];

/// How far a recomputed output may be from the reference, per element, and
/// how many elements may be farther. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputTolerance {
    /// Relative tolerance, against the reference's value. Ignored for
    /// integer and boolean outputs, which must be equal.
    pub rtol: f64,
    /// Absolute tolerance. Ignored for integer and boolean outputs.
    pub atol: f64,
    /// Probability with which an honest element may miss; 0: every element
    /// (or index) must be within tolerance.
    pub miss_rate: f64,
}

impl OutputTolerance {
    pub const EXACT: OutputTolerance = OutputTolerance {
        rtol: 0.0,
        atol: 0.0,
        miss_rate: 0.0,
    };

    /// Refuses a tolerance that is not a number, negative, or so large it
    /// would accept anything (the values may come from a file or the network).
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: f64, max: f64| {
            if v.is_nan() || v < 0.0 || v > max {
                Err(format!("{name} {v} is not a number in [0, {max}]"))
            } else {
                Ok(())
            }
        };
        check("rtol", self.rtol, RTOL_MAX)?;
        check("atol", self.atol, ATOL_MAX)?;
        check("miss_rate", self.miss_rate, MISS_RATE_MAX)
    }

    /// The element's limit |a − b| must not exceed.
    fn limit(&self, b: f64) -> f64 {
        self.atol + self.rtol * b.abs()
    }
}

/// Most misses among `n` elements that an honest node, missing each with
/// probability at most `miss_rate`, exceeds with probability at most
/// `false_alarm` (Chernoff–KL bound on the binomial tail; see the module
/// documentation). A rate of 0 allows none; arguments outside [0, 1] are
/// treated as the nearest bound.
pub fn allowed_misses(n: u64, miss_rate: f64, false_alarm: f64) -> u64 {
    let p = if miss_rate.is_nan() {
        1.0
    } else {
        miss_rate.clamp(0.0, 1.0)
    };
    if n == 0 || p == 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    let alpha = if false_alarm.is_nan() {
        0.0
    } else {
        false_alarm.clamp(0.0, 1.0)
    };
    let target = -alpha.ln(); // +inf when alpha is 0: nothing is ever flagged
    let nf = n as f64;
    // Bound on P[X >= j]: 1 up to the mean, exp(-n D(j/n || p)) above it.
    let log_tail = |j: u64| -> f64 {
        let x = j as f64 / nf;
        if x <= p {
            return 0.0;
        }
        let a = x * (x / p).ln();
        let b = if j == n {
            0.0
        } else {
            (1.0 - x) * ((1.0 - x).ln() - (-p).ln_1p())
        };
        -(nf * (a + b))
    };
    if target <= 0.0 {
        return 0; // a false-alarm rate of 1: every miss is flagged
    }
    // Smallest j with bound(j) <= alpha: misses >= j are flagged, j - 1 are
    // allowed. The bound falls as j grows above the mean. Invariant:
    // bound(lo) > alpha >= bound(hi).
    if -log_tail(n) < target {
        return n;
    }
    let (mut lo, mut hi) = (((nf * p).floor() as u64).min(n - 1), n);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if -log_tail(mid) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    lo
}

/// An integer output holding, along `axis`, the indices of the largest
/// values of the float output `values` of the same result, largest first:
/// ONNX `ArgMax` (keepdims 0 or 1, first index on ties) or `TopK` with
/// `largest=1, sorted=1`. Its shape is that of `values` with the axis
/// removed (one index) or of length k.
///
/// Under a name that is not an output of the result, the pairing is a
/// derived check: the argmax of `values` along `axis`, taken from the
/// candidate's and the reference's values as a greedy sampler would take
/// it, judged the same way (the greedy tokens of logits). It has a
/// tolerance of its own under that name, for its miss rate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndicesOf {
    pub values: String,
    pub axis: usize,
}

/// Pairings by the name of the judged integer output, or of the derived
/// check.
pub type Pairings = BTreeMap<String, IndicesOf>;

/// What one check looked at.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// Elementwise, within the output's tolerance (integers: equality).
    Values,
    /// Indices into `values` along `axis`, judged by the reference's values.
    Indices { values: String, axis: usize },
}

/// The element that missed by the most (relative to its limit).
#[derive(Clone, Debug, PartialEq)]
pub struct Worst {
    /// Flat (row-major) index in the judged tensor.
    pub index: usize,
    /// The candidate's value (an index, for indices).
    pub actual: f64,
    /// The reference's value (an index, for indices).
    pub expected: f64,
    /// |actual − expected| (for indices: how far the candidate's index's
    /// value is from the value at that rank, in the reference).
    pub diff: f64,
    /// What `diff` had to stay within.
    pub limit: f64,
}

/// One check of one output.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub output: String,
    pub kind: CheckKind,
    pub total: u64,
    pub misses: u64,
    pub allowed: u64,
    pub worst: Option<Worst>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.misses <= self.allowed
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.kind {
            CheckKind::Values => "elements".to_string(),
            CheckKind::Indices { values, axis } => format!("indices (into {values:?} along axis {axis})"),
        };
        write!(
            f,
            "output {:?}: {} of {} {what} miss, at most {} allowed",
            self.output, self.misses, self.total, self.allowed
        )?;
        if let Some(w) = &self.worst {
            write!(
                f,
                "; worst at {}: {} vs {} (|diff| {:e} > limit {:e})",
                w.index, w.actual, w.expected, w.diff, w.limit
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    #[error("the candidate lacks output {0:?}")]
    Missing(String),
    #[error("the candidate has output {0:?}, which the reference lacks")]
    Unexpected(String),
    #[error("output {output:?}: {mismatch}")]
    Form { output: String, mismatch: Mismatch },
    #[error("{0}")]
    Misses(Box<Check>),
    /// The judge cannot judge: a tolerance or pairing is missing or
    /// invalid for the reference. Nobody's result is at fault.
    #[error("output {output:?} cannot be judged: {reason}")]
    Invalid { output: String, reason: String },
}

impl JudgeError {
    /// True when the candidate disagrees with the reference (as opposed to
    /// the judge lacking a valid tolerance or pairing).
    pub fn is_disagreement(&self) -> bool {
        !matches!(self, JudgeError::Invalid { .. })
    }
}

/// Judges every output of `candidate` against `reference` (see the module
/// documentation): the same names, dtypes and shapes, and no check with
/// more misses than allowed. Tolerances and pairings are validated against
/// the reference first, so an invalid configuration is reported as
/// [`JudgeError::Invalid`], never as a disagreement.
pub fn judge(
    candidate: &BTreeMap<String, Tensor>,
    reference: &BTreeMap<String, Tensor>,
    tolerances: &BTreeMap<String, OutputTolerance>,
    pairings: &Pairings,
) -> Result<(), JudgeError> {
    let checks = assess(candidate, reference, tolerances, pairings)?;
    match checks.into_iter().find(|c| !c.passed()) {
        Some(c) => Err(JudgeError::Misses(Box::new(c))),
        None => Ok(()),
    }
}

/// Every check [`judge`] makes, passed or not: the outputs in name order,
/// then the derived checks in name order. Errors
/// only where a check cannot be made (invalid configuration, missing or
/// unexpected outputs, dtype or shape differences).
pub fn assess(
    candidate: &BTreeMap<String, Tensor>,
    reference: &BTreeMap<String, Tensor>,
    tolerances: &BTreeMap<String, OutputTolerance>,
    pairings: &Pairings,
) -> Result<Vec<Check>, JudgeError> {
    let layouts = validate(reference, tolerances, pairings)?;
    if let Some(name) = reference.keys().find(|n| !candidate.contains_key(*n)) {
        return Err(JudgeError::Missing(name.clone()));
    }
    if let Some(name) = candidate.keys().find(|n| !reference.contains_key(*n)) {
        return Err(JudgeError::Unexpected(name.clone()));
    }
    for (name, r) in reference {
        let c = &candidate[name];
        let mismatch = if c.dtype != r.dtype {
            Some(Mismatch::DType(c.dtype, r.dtype))
        } else if c.shape != r.shape {
            Some(Mismatch::Shape(c.shape.clone(), r.shape.clone()))
        } else {
            None
        };
        if let Some(mismatch) = mismatch {
            return Err(JudgeError::Form {
                output: name.clone(),
                mismatch,
            });
        }
    }
    let mut checks = Vec::new();
    for (name, r) in reference {
        let tol = tolerances[name];
        // An integer output with a pairing is judged by its values' ranks only.
        checks.push(match (pairings.get(name), layouts.get(name)) {
            (Some(p), Some(layout)) => {
                let vtol = tolerances[&p.values];
                check_indices(name, p, layout, candidate, reference, &vtol, tol.miss_rate)
            }
            _ => check_values(name, &candidate[name], r, &tol),
        });
    }
    for (name, p) in pairings.iter().filter(|(k, _)| !reference.contains_key(*k)) {
        let vtol = tolerances[&p.values];
        let rate = tolerances[name].miss_rate;
        checks.push(check_indices(
            name,
            p,
            &layouts[name],
            candidate,
            reference,
            &vtol,
            rate,
        ));
    }
    Ok(checks)
}

/// How an index output lies over its values: `outer` rows of `len` values
/// (stride `inner`), `k` indices per row.
#[derive(Clone, Copy, Debug)]
struct Layout {
    outer: usize,
    len: usize,
    inner: usize,
    k: usize,
    /// The indices are derived (the argmax of the values), not an output.
    derived: bool,
}

fn invalid(output: &str, reason: impl Into<String>) -> JudgeError {
    JudgeError::Invalid {
        output: output.to_string(),
        reason: reason.into(),
    }
}

/// Checks tolerances and pairings against the reference; returns the layout
/// of every pairing.
fn validate(
    reference: &BTreeMap<String, Tensor>,
    tolerances: &BTreeMap<String, OutputTolerance>,
    pairings: &Pairings,
) -> Result<BTreeMap<String, Layout>, JudgeError> {
    for name in reference
        .keys()
        .chain(pairings.keys().filter(|k| !reference.contains_key(*k)))
    {
        let tol = tolerances
            .get(name)
            .ok_or_else(|| invalid(name, "no tolerance is given for it"))?;
        tol.validate().map_err(|e| invalid(name, e))?;
    }
    let mut layouts = BTreeMap::new();
    for (name, p) in pairings {
        let layout = pairing_layout(name, p, reference).map_err(|e| invalid(name, e))?;
        layouts.insert(name.clone(), layout);
    }
    Ok(layouts)
}

fn pairing_layout(name: &str, p: &IndicesOf, outputs: &BTreeMap<String, Tensor>) -> Result<Layout, String> {
    let vals = outputs
        .get(&p.values)
        .ok_or_else(|| format!("its values {:?} are not an output of the result", p.values))?;
    if !vals.dtype.is_float() {
        return Err(format!("its values {:?} are {}, not floats", p.values, vals.dtype));
    }
    let s = &vals.shape;
    if p.axis >= s.len() {
        return Err(format!("axis {} is out of range for shape {s:?}", p.axis));
    }
    let len = s[p.axis];
    if len == 0 {
        return Err(format!("axis {} of {:?} is empty", p.axis, p.values));
    }
    let outer: usize = s[..p.axis].iter().product();
    let inner: usize = s[p.axis + 1..].iter().product();
    let Some(idx) = outputs.get(name) else {
        return Ok(Layout {
            outer,
            len,
            inner,
            k: 1,
            derived: true,
        });
    };
    if idx.dtype.is_float() || idx.dtype == DType::Bool {
        return Err(format!("indices must be integers, not {}", idx.dtype));
    }
    let mut dropped = s.clone();
    dropped.remove(p.axis);
    let k = if idx.shape == dropped {
        1
    } else if idx.shape.len() == s.len()
        && idx.shape[..p.axis] == s[..p.axis]
        && idx.shape[p.axis + 1..] == s[p.axis + 1..]
        && (1..=len).contains(&idx.shape[p.axis])
    {
        idx.shape[p.axis]
    } else {
        return Err(format!(
            "shape {:?} is not {s:?} with axis {} removed or shortened",
            idx.shape, p.axis
        ));
    };
    Ok(Layout {
        outer,
        len,
        inner,
        k,
        derived: false,
    })
}

/// Whether `a` is within `tol` of the reference `b`; `None` if so, else the
/// difference and the limit it broke.
fn miss(a: f64, b: f64, tol: &OutputTolerance) -> Option<(f64, f64)> {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() {
            None
        } else {
            Some((f64::INFINITY, tol.limit(b)))
        };
    }
    if a.is_infinite() || b.is_infinite() {
        return if a == b {
            None
        } else {
            Some((f64::INFINITY, tol.limit(b)))
        };
    }
    let d = (a - b).abs();
    let limit = tol.limit(b);
    (d > limit).then_some((d, limit))
}

/// How badly a miss missed: diff over limit (infinite for a zero limit).
fn severity(diff: f64, limit: f64) -> f64 {
    if limit > 0.0 {
        diff / limit
    } else if diff > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

struct Tally {
    misses: u64,
    worst: Option<(f64, Worst)>,
}

impl Tally {
    fn new() -> Tally {
        Tally { misses: 0, worst: None }
    }
    fn add(&mut self, index: usize, actual: f64, expected: f64, diff: f64, limit: f64) {
        self.misses += 1;
        let s = severity(diff, limit);
        if self.worst.as_ref().is_none_or(|(w, _)| s > *w) {
            self.worst = Some((
                s,
                Worst {
                    index,
                    actual,
                    expected,
                    diff,
                    limit,
                },
            ));
        }
    }
}

fn check_values(name: &str, c: &Tensor, r: &Tensor, tol: &OutputTolerance) -> Check {
    let total = r.len() as u64;
    let mut t = Tally::new();
    if c.bytes() != r.bytes() {
        let (a, b) = (c.to_f64_vec(), r.to_f64_vec());
        if r.dtype.is_float() {
            for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
                if let Some((d, l)) = miss(x, y, tol) {
                    t.add(i, x, y, d, l);
                }
            }
        } else {
            for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
                if x != y {
                    t.add(i, x, y, (x - y).abs(), 0.0);
                }
            }
        }
    }
    Check {
        output: name.to_string(),
        kind: CheckKind::Values,
        total,
        misses: t.misses,
        allowed: allowed_misses(total, tol.miss_rate, FALSE_ALARM),
        worst: t.worst.map(|(_, w)| w),
    }
}

/// The first index of the largest value of a row (NaN never wins), as ONNX
/// `ArgMax` picks it.
fn argmax(row: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NAN);
    for (i, v) in row.enumerate() {
        if !v.is_nan() && (best.1.is_nan() || v > best.1) {
            best = (i, v);
        }
    }
    best.0
}

fn check_indices(
    name: &str,
    p: &IndicesOf,
    l: &Layout,
    candidate: &BTreeMap<String, Tensor>,
    reference: &BTreeMap<String, Tensor>,
    vtol: &OutputTolerance,
    miss_rate: f64,
) -> Check {
    let rv = reference[&p.values].to_f64_vec();
    let row =
        |v: &[f64], o: usize, i: usize| -> Vec<f64> { (0..l.len).map(|j| v[(o * l.len + j) * l.inner + i]).collect() };
    // Indices laid out as [outer, k, inner].
    let (ci, ri): (Vec<f64>, Vec<f64>) = if l.derived {
        let cv = candidate[&p.values].to_f64_vec();
        let mut ci = Vec::with_capacity(l.outer * l.inner);
        let mut ri = Vec::with_capacity(l.outer * l.inner);
        for o in 0..l.outer {
            for i in 0..l.inner {
                ci.push(argmax(row(&cv, o, i).into_iter()) as f64);
                ri.push(argmax(row(&rv, o, i).into_iter()) as f64);
            }
        }
        (ci, ri)
    } else {
        (candidate[name].to_f64_vec(), reference[name].to_f64_vec())
    };
    let mut t = Tally::new();
    for o in 0..l.outer {
        for i in 0..l.inner {
            // The reference's values of this row, largest first, sorted only
            // where an index differs.
            let mut ranked: Option<Vec<f64>> = None;
            for j in 0..l.k {
                let at = (o * l.k + j) * l.inner + i;
                let (tc, tr) = (ci[at], ri[at]);
                if tc == tr {
                    continue;
                }
                if !(tc >= 0.0 && tc < l.len as f64) {
                    t.add(at, tc, tr, f64::INFINITY, 0.0);
                    continue;
                }
                let ranked = ranked.get_or_insert_with(|| {
                    let mut r = row(&rv, o, i);
                    r.sort_by(|a, b| b.total_cmp(a));
                    r
                });
                let at_rank = ranked[j];
                let theirs = rv[(o * l.len + tc as usize) * l.inner + i];
                let gap = (at_rank - theirs).abs();
                let limit = vtol.limit(at_rank) + vtol.limit(theirs);
                if gap.is_nan() || gap > limit {
                    t.add(at, tc, tr, if gap.is_nan() { f64::INFINITY } else { gap }, limit);
                }
            }
        }
    }
    let total = ci.len() as u64;
    Check {
        output: name.to_string(),
        kind: CheckKind::Indices {
            values: p.values.clone(),
            axis: p.axis,
        },
        total,
        misses: t.misses,
        allowed: allowed_misses(total, miss_rate, FALSE_ALARM),
        worst: t.worst.map(|(_, w)| w),
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrateError {
    #[error("calibration needs at least two honest runs, {0} given")]
    TooFewRuns(usize),
    #[error("safety factor {0} is not a number in [{SAFETY_MIN}, {SAFETY_MAX}]")]
    Safety(f64),
    #[error("run {run}: {reason}")]
    Runs { run: usize, reason: String },
    #[error("output {output:?}: {reason}")]
    Pairing { output: String, reason: String },
    /// Honest runs of this output differ so much that no tolerance within
    /// the limits covers them: the output cannot be checked numerically
    /// across these variants.
    #[error("output {output:?}: honest runs differ beyond what can be checked ({reason})")]
    Unstable { output: String, reason: String },
}

/// Relative size of one unit in the last place.
fn ulp(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::EPSILON,
        DType::F16 => 2f64.powi(-10),
        DType::Bf16 => 2f64.powi(-7),
        _ => f32::EPSILON as f64,
    }
}

/// The smallest positive normal number of a float type.
fn tiny(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::MIN_POSITIVE,
        DType::F16 => half::f16::MIN_POSITIVE.to_f64(),
        _ => f32::MIN_POSITIVE as f64,
    }
}

/// The `q`-quantile of `v` (its largest value for fewer than 1/(1 − q)
/// elements); NaN sorts last. Reorders `v`.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let k = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    *v.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1
}

/// Calibrates a tolerance for every output from `runs`: at least two
/// honest runs of the same task on the same inputs, under the variants
/// nodes may use (precisions, optimisation levels, thread counts).
///
/// For a float output, over every two runs (a, b) and every element:
/// e = |a − b|, m = min(|a|, |b|), s = the output's RMS over all runs.
/// For each candidate ratio c of [0, 10⁻⁴, …, 10], rtol_c is the
/// [`CALIBRATION_QUANTILE`] of e / (m + c·s) over each pair, the largest over
/// pairs; the c that makes the limit at an element of typical size (|b| = s),
/// rtol_c·(1 + c)·s, smallest wins. Then rtol = safety·rtol_c and
/// atol = rtol·c·s, floored at four units in the last place of the
/// output's dtype (rtol) and that times s (atol, and at least the dtype's
/// smallest normal number), so bit-identical runs still tolerate last-bit
/// noise. The miss
/// rate is `safety` times the largest share of elements any pair (in
/// either order) misses at that tolerance, at least [`MISS_RATE_FLOOR`].
/// An output is [`CalibrateError::Unstable`] when rtol would exceed
/// [`RTOL_MAX`], atol [`ATOL_MAX`], the limit at an element of typical size
/// (atol + rtol·s) that element itself, or the miss rate [`MISS_RATE_MAX`].
///
/// Integer and boolean outputs: exact (miss rate 0) unless runs differ,
/// then `safety` times the largest share that differs. An integer output
/// named in `pairings`, and every derived check there, gets the miss rate
/// `safety` times the largest share of indices that honest pairs miss
/// under [`judge`]'s near-tie rule, at least [`MISS_RATE_FLOOR`].
pub fn calibrate(
    runs: &[BTreeMap<String, Tensor>],
    safety: f64,
    pairings: &Pairings,
) -> Result<BTreeMap<String, OutputTolerance>, CalibrateError> {
    if runs.len() < 2 {
        return Err(CalibrateError::TooFewRuns(runs.len()));
    }
    if !(SAFETY_MIN..=SAFETY_MAX).contains(&safety) {
        return Err(CalibrateError::Safety(safety));
    }
    let first = &runs[0];
    for (r, run) in runs.iter().enumerate().skip(1) {
        let reason = if let Some(n) = first.keys().find(|n| !run.contains_key(*n)) {
            Some(format!("lacks output {n:?}"))
        } else if let Some(n) = run.keys().find(|n| !first.contains_key(*n)) {
            Some(format!("has output {n:?}, which run 0 lacks"))
        } else {
            first.iter().find_map(|(n, t)| {
                let u = &run[n];
                (u.dtype != t.dtype || u.shape != t.shape).then(|| {
                    format!(
                        "output {n:?} is {} {:?}, run 0 gave {} {:?}",
                        u.dtype, u.shape, t.dtype, t.shape
                    )
                })
            })
        };
        if let Some(reason) = reason {
            return Err(CalibrateError::Runs { run: r, reason });
        }
    }
    let pairs: Vec<(usize, usize)> = (0..runs.len())
        .flat_map(|i| (i + 1..runs.len()).map(move |j| (i, j)))
        .collect();
    let mut tolerances = BTreeMap::new();
    for (name, t) in first {
        let values: Vec<Vec<f64>> = runs.iter().map(|r| r[name].to_f64_vec()).collect();
        let tol = if t.dtype.is_float() {
            calibrate_float(name, t.dtype, &values, &pairs, safety)?
        } else if pairings.contains_key(name) {
            OutputTolerance::EXACT // judged by rank: calibrated below
        } else {
            let mut rate = 0.0f64;
            for &(i, j) in &pairs {
                let differ = values[i].iter().zip(&values[j]).filter(|(a, b)| a != b).count();
                rate = rate.max(differ as f64 / t.len().max(1) as f64);
            }
            OutputTolerance {
                miss_rate: scaled_rate(name, rate, safety, 0.0)?,
                ..OutputTolerance::EXACT
            }
        };
        tolerances.insert(name.clone(), tol);
    }
    for (name, p) in pairings {
        let layout = pairing_layout(name, p, first).map_err(|reason| CalibrateError::Pairing {
            output: name.clone(),
            reason,
        })?;
        let vtol = tolerances[&p.values];
        let mut rate = 0.0f64;
        for &(i, j) in &pairs {
            for (c, r) in [(i, j), (j, i)] {
                let check = check_indices(name, p, &layout, &runs[c], &runs[r], &vtol, 0.0);
                rate = rate.max(check.misses as f64 / check.total.max(1) as f64);
            }
        }
        tolerances.insert(
            name.clone(),
            OutputTolerance {
                miss_rate: scaled_rate(name, rate, safety, MISS_RATE_FLOOR)?,
                ..OutputTolerance::EXACT
            },
        );
    }
    Ok(tolerances)
}

fn scaled_rate(name: &str, rate: f64, safety: f64, floor: f64) -> Result<f64, CalibrateError> {
    let r = if rate > 0.0 { (rate * safety).max(floor) } else { floor };
    if r > MISS_RATE_MAX {
        return Err(CalibrateError::Unstable {
            output: name.to_string(),
            reason: format!(
                "{:.2} % of elements differ between two runs; a miss rate of {r} is above {MISS_RATE_MAX}",
                rate * 100.0
            ),
        });
    }
    Ok(r)
}

fn calibrate_float(
    name: &str,
    dtype: DType,
    values: &[Vec<f64>],
    pairs: &[(usize, usize)],
    safety: f64,
) -> Result<OutputTolerance, CalibrateError> {
    let (mut sum2, mut count) = (0.0f64, 0usize);
    for v in values {
        for &x in v.iter().filter(|x| x.is_finite()) {
            sum2 += x * x;
            count += 1;
        }
    }
    let rms = if count > 0 { (sum2 / count as f64).sqrt() } else { 0.0 };
    // Per element of every pair: (difference, smaller magnitude), finite only;
    // non-finite differences are left to the miss rate.
    let diffs: Vec<Vec<(f64, f64)>> = pairs
        .iter()
        .map(|&(i, j)| {
            values[i]
                .iter()
                .zip(&values[j])
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .map(|(a, b)| ((a - b).abs(), a.abs().min(b.abs())))
                .collect()
        })
        .collect();
    // (limit at |b| = s, over s; rtol; c). Judging by the limit at a typical
    // element, not by the mean limit: in a softmax most elements are tiny,
    // and a mean would buy a small atol with a huge rtol on the few that matter.
    let mut best: Option<(f64, f64, f64)> = None;
    let mut ratios = Vec::new();
    for c in ATOL_SCALES {
        let floor = c * rms;
        let mut rtol = 0.0f64;
        for d in &diffs {
            ratios.clear();
            ratios.extend(d.iter().map(|&(e, m)| {
                let den = m + floor;
                if e == 0.0 {
                    0.0
                } else if den > 0.0 {
                    e / den
                } else {
                    f64::INFINITY
                }
            }));
            rtol = rtol.max(quantile(&mut ratios, CALIBRATION_QUANTILE));
        }
        if !rtol.is_finite() {
            continue;
        }
        let typical = rtol * (1.0 + c);
        if best.is_none_or(|(m, _, _)| typical < m) {
            best = Some((typical, rtol, c));
        }
    }
    // Every ratio is finite for c = 1 unless the output is all zeros, in
    // which case every difference is zero too: `best` is always set.
    let (_, rtol_c, c) = best.unwrap_or((0.0, 0.0, 1.0));
    let rtol_floor = 4.0 * ulp(dtype);
    let rtol = (safety * rtol_c).max(rtol_floor);
    let atol = (safety * rtol_c * c * rms).max(rtol_floor * rms).max(tiny(dtype));
    // A limit above the value itself at an element of typical size would
    // let a cheat zero the output.
    if rtol > RTOL_MAX || atol > ATOL_MAX || (rms > 0.0 && rtol + atol / rms > 1.0) {
        return Err(CalibrateError::Unstable {
            output: name.to_string(),
            reason: format!("it would need rtol {rtol:.3e}, atol {atol:.3e}, on values of RMS {rms:.3e}"),
        });
    }
    let mut tol = OutputTolerance {
        rtol,
        atol,
        miss_rate: 0.0,
    };
    let mut rate = 0.0f64;
    for &(i, j) in pairs {
        for (a, b) in [(&values[i], &values[j]), (&values[j], &values[i])] {
            let misses = a.iter().zip(b).filter(|(x, y)| miss(**x, **y, &tol).is_some()).count();
            rate = rate.max(misses as f64 / a.len().max(1) as f64);
        }
    }
    tol.miss_rate = scaled_rate(name, rate, safety, MISS_RATE_FLOOR)?;
    Ok(tol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small seeded generator (xorshift*), so the tests need no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// `count` distinct indices below `n`.
        fn pick(&mut self, n: usize, count: usize) -> Vec<usize> {
            let mut all: Vec<usize> = (0..n).collect();
            for i in 0..count {
                let j = i + self.below(n - i);
                all.swap(i, j);
            }
            all.truncate(count);
            all
        }
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v).unwrap()
    }

    fn one(name: &str, t: Tensor) -> BTreeMap<String, Tensor> {
        BTreeMap::from([(name.to_string(), t)])
    }

    fn tols(pairs: &[(&str, OutputTolerance)]) -> BTreeMap<String, OutputTolerance> {
        pairs.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    }

    /// Moves `v` by `ulps` units in the last place (f32).
    fn nudge(v: f32, ulps: i32) -> f32 {
        let b = v.to_bits() as i64 + if v >= 0.0 { ulps as i64 } else { -(ulps as i64) };
        f32::from_bits(b as u32)
    }

    /// Exact binomial upper tail P[X >= k], summed in log space.
    fn exact_tail(n: u64, p: f64, k: u64) -> f64 {
        let ln_choose = |n: u64, j: u64| -> f64 {
            (1..=j)
                .map(|i| ((n - j + i) as f64).ln() - (i as f64).ln())
                .sum::<f64>()
        };
        (k..=n.min(k + 200))
            .map(|j| (ln_choose(n, j) + j as f64 * p.ln() + (n - j) as f64 * (-p).ln_1p()).exp())
            .sum()
    }

    #[test]
    fn allowed_misses_bounds_the_false_alarm_and_is_not_far_above_the_exact_quantile() {
        for &(n, p) in &[
            (100u64, 1e-3),
            (10_000, 1e-3),
            (100_000, 1e-6),
            (64, 1e-2),
            (2_000_000, 1e-4),
            (1_000, 0.05),
        ] {
            let k = allowed_misses(n, p, FALSE_ALARM);
            // More than k misses happen to an honest node at most 1e-9 of the time...
            assert!(exact_tail(n, p, k + 1) <= FALSE_ALARM, "n {n} p {p}: k {k}");
            // ...and the bound is not loose: a few misses fewer would already be too many.
            let exact = (0..=n).find(|&j| exact_tail(n, p, j + 1) <= FALSE_ALARM).unwrap();
            assert!(
                k >= exact && k <= exact + 2 + exact / 4,
                "n {n} p {p}: {k} vs exact {exact}"
            );
        }
        // At the floor rate: outputs of one to four elements are exact in
        // count; from five on, one marginal miss is allowed, a handful is not.
        for n in 1..=4 {
            assert_eq!(allowed_misses(n, MISS_RATE_FLOOR, FALSE_ALARM), 0, "n {n}");
        }
        assert_eq!(allowed_misses(5, MISS_RATE_FLOOR, FALSE_ALARM), 1);
        assert_eq!(allowed_misses(100_000, MISS_RATE_FLOOR, FALSE_ALARM), 1);
        assert_eq!(allowed_misses(2_048_000, MISS_RATE_FLOOR, FALSE_ALARM), 2);
        assert!(allowed_misses(1 << 40, MISS_RATE_FLOOR, FALSE_ALARM) < 1000);
        // Degenerate arguments.
        assert_eq!(allowed_misses(0, 0.1, FALSE_ALARM), 0);
        assert_eq!(allowed_misses(1000, 0.0, FALSE_ALARM), 0);
        assert_eq!(allowed_misses(1000, 1.0, FALSE_ALARM), 1000);
        assert_eq!(allowed_misses(1000, f64::NAN, FALSE_ALARM), 1000);
        assert_eq!(allowed_misses(1000, 0.1, 0.0), 1000);
        // More elements never allow fewer misses.
        let mut last = 0;
        for n in (1..5000).step_by(7) {
            let k = allowed_misses(n, 1e-3, FALSE_ALARM);
            assert!(k >= last);
            last = k;
        }
    }

    #[test]
    fn a_single_marginal_miss_among_many_elements_passes_a_handful_fails() {
        let n = 100_000;
        let mut rng = Rng(1);
        let a: Vec<f32> = (0..n).map(|_| (rng.unit() * 8.0 - 4.0) as f32).collect();
        let b: Vec<f32> = a.iter().map(|&x| nudge(x, 1)).collect();
        let runs = [one("y", f32s(&[n], &a)), one("y", f32s(&[n], &b))];
        let t = calibrate(&runs, 4.0, &Pairings::new()).unwrap();
        let tol = t["y"];
        assert_eq!(tol.miss_rate, MISS_RATE_FLOOR);
        // Fresh honest last-bit noise passes.
        let c: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &x)| nudge(x, (i % 3) as i32 - 1))
            .collect();
        assert_eq!(judge(&one("y", f32s(&[n], &c)), &runs[0], &t, &Pairings::new()), Ok(()));
        // One element just beyond its limit: no proof of anything.
        let beyond = |x: f32| {
            let l = tol.limit(x as f64);
            (x as f64 + 1.5 * l) as f32
        };
        let mut d = a.clone();
        d[777] = beyond(a[777]);
        let checks = assess(&one("y", f32s(&[n], &d)), &runs[0], &t, &Pairings::new()).unwrap();
        assert_eq!((checks[0].misses, checks[0].allowed), (1, 1));
        assert_eq!(judge(&one("y", f32s(&[n], &d)), &runs[0], &t, &Pairings::new()), Ok(()));
        // Three: a pattern.
        for i in [10, 20_000, 99_999] {
            d[i] = beyond(a[i]);
        }
        let err = judge(&one("y", f32s(&[n], &d)), &runs[0], &t, &Pairings::new()).unwrap_err();
        assert!(err.is_disagreement());
        let msg = err.to_string();
        assert!(
            msg.contains("output \"y\": 4 of 100000 elements miss, at most 1 allowed"),
            "{msg}"
        );
        assert!(msg.contains("worst at"), "{msg}");
    }

    /// f32 logits [64, 32000] of a model whose top two logits per row are
    /// 0.2 apart near 25, and two honest runs that differ in the last bits
    /// (another accumulation order).
    fn logits(seed: u64) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
        let (rows, vocab) = (64, 32_000);
        let mut rng = Rng(seed);
        let mut v: Vec<f32> = (0..rows * vocab).map(|_| (rng.unit() * 20.0) as f32).collect();
        let mut second = Vec::new();
        for r in 0..rows {
            let pick = rng.pick(vocab, 2);
            v[r * vocab + pick[0]] = 25.0 + (rng.unit() as f32);
            v[r * vocab + pick[1]] = v[r * vocab + pick[0]] - 0.2;
            second.push(pick[1]);
        }
        let w: Vec<f32> = v.iter().map(|&x| nudge(x, rng.below(5) as i32 - 2)).collect();
        (v, w, second)
    }

    #[test]
    fn flipping_the_greedy_token_at_20_of_64_positions_is_caught_though_agree_passed_it() {
        let (rows, vocab) = (64, 32_000);
        let (v, w, second) = logits(3);
        let shape = [rows, vocab];
        let pair = Pairings::from([(
            "greedy".to_string(),
            IndicesOf {
                values: "logits".into(),
                axis: 1,
            },
        )]);
        let runs = [one("logits", f32s(&shape, &v)), one("logits", f32s(&shape, &w))];
        let t = calibrate(&runs, 4.0, &pair).unwrap();
        assert_eq!(judge(&runs[1], &runs[0], &t, &pair), Ok(()));
        // The cheat: at 20 rows, raise the runner-up just above the winner.
        let mut cheat = v.clone();
        for r in 0..20 {
            let row = &mut cheat[r * vocab..(r + 1) * vocab];
            let top = row.iter().cloned().fold(f32::MIN, f32::max);
            row[second[r]] = top + 0.01;
        }
        let cheat = f32s(&shape, &cheat);
        // The old rule: relative L2 and max-abs scaled by the largest logit.
        assert_eq!(crate::agree(&cheat, &runs[0]["logits"]), Ok(()));
        let checks = assess(&one("logits", cheat.clone()), &runs[0], &t, &pair).unwrap();
        let tokens = checks
            .iter()
            .find(|c| matches!(c.kind, CheckKind::Indices { .. }))
            .unwrap();
        assert_eq!(tokens.total, 64);
        assert_eq!(tokens.misses, 20);
        assert!(tokens.allowed <= 1, "{tokens}");
        let err = judge(&one("logits", cheat), &runs[0], &t, &pair).unwrap_err();
        assert!(err.is_disagreement(), "{err}");
        // The nudged logits are 20 elementwise misses as well: at the floor
        // miss rate, too many among 2 million.
        let values = checks.iter().find(|c| c.kind == CheckKind::Values).unwrap();
        assert_eq!((values.misses, values.allowed), (20, 2));
        assert!(
            err.to_string()
                .starts_with("output \"logits\": 20 of 2048000 elements miss"),
            "{err}"
        );
        // The derived check needs its own tolerance (its miss rate).
        let mut lacking = t.clone();
        lacking.remove("greedy");
        let err = judge(&runs[1], &runs[0], &lacking, &pair).unwrap_err();
        assert!(!err.is_disagreement(), "{err}");
    }

    fn round_bf16(x: f32) -> f32 {
        half::bf16::from_f32(x).to_f32()
    }

    /// logits = h·W over k, in f32 (one run forward, one backward), and as a
    /// bf16 node computes it: bf16 operands, f32 accumulation, a bf16 result.
    fn matmul_runs(seed: u64, rows: usize, vocab: usize, k: usize) -> [Vec<f32>; 3] {
        let mut rng = Rng(seed);
        let h: Vec<f32> = (0..rows * k).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect();
        let mut wr = Rng(99); // the weights are the task's: the same for every input
        let w: Vec<f32> = (0..k * vocab).map(|_| (wr.unit() * 2.0 - 1.0) as f32).collect();
        let (hb, wb): (Vec<f32>, Vec<f32>) = (
            h.iter().map(|&x| round_bf16(x)).collect(),
            w.iter().map(|&x| round_bf16(x)).collect(),
        );
        let mut out = [
            vec![0f32; rows * vocab],
            vec![0f32; rows * vocab],
            vec![0f32; rows * vocab],
        ];
        for r in 0..rows {
            for c in 0..vocab {
                let (mut f, mut b, mut q) = (0f32, 0f32, 0f32);
                for i in 0..k {
                    f += h[r * k + i] * w[i * vocab + c];
                    b += h[r * k + k - 1 - i] * w[(k - 1 - i) * vocab + c];
                    q += hb[r * k + i] * wb[i * vocab + c];
                }
                out[0][r * vocab + c] = f;
                out[1][r * vocab + c] = b;
                out[2][r * vocab + c] = round_bf16(q);
            }
        }
        out
    }

    #[test]
    fn honest_bf16_and_fp32_logits_pass_with_the_calibrated_tolerance_cheats_do_not() {
        let (rows, vocab, k) = (64, 4096, 64);
        let shape = [rows, vocab];
        let pair = Pairings::from([(
            "greedy".to_string(),
            IndicesOf {
                values: "logits".into(),
                axis: 1,
            },
        )]);
        let as_runs = |r: [Vec<f32>; 3]| r.map(|v| one("logits", f32s(&shape, &v)));
        // Calibrated on one input, judged on another.
        let cal = as_runs(matmul_runs(1, rows, vocab, k));
        let t = calibrate(&cal, 4.0, &pair).unwrap();
        let tol = t["logits"];
        assert!(tol.rtol > 1e-3 && tol.rtol < 0.5, "{tol:?}");
        let runs = as_runs(matmul_runs(2, rows, vocab, k));
        // bf16 and fp32 flip some greedy tokens: at near-ties only.
        let (r0, r2) = (&runs[0]["logits"].to_f64_vec(), &runs[2]["logits"].to_f64_vec());
        let flips = (0..rows)
            .filter(|&r| {
                let row = |v: &[f64]| argmax(v[r * vocab..(r + 1) * vocab].iter().cloned());
                row(r0) != row(r2)
            })
            .count();
        eprintln!("bf16 vs fp32: {flips} of {rows} greedy tokens differ; tolerance {tol:?}");
        for c in &runs {
            for r in &runs {
                assert_eq!(judge(c, r, &t, &pair), Ok(()));
            }
        }
        // Scaling every logit by 1.5, or moving 10 % of them 3 limits away, is caught.
        let v = &runs[0]["logits"].to_f64_vec();
        let scaled: Vec<f32> = v.iter().map(|&x| (x * 1.5) as f32).collect();
        assert!(judge(&one("logits", f32s(&shape, &scaled)), &runs[0], &t, &pair).is_err());
        let mut rng = Rng(5);
        let mut moved: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        for i in rng.pick(v.len(), v.len() / 10) {
            moved[i] = (v[i] + 3.0 * tol.limit(v[i])) as f32;
        }
        assert!(judge(&one("logits", f32s(&shape, &moved)), &runs[0], &t, &pair).is_err());
    }

    #[test]
    fn argmax_flips_at_near_ties_pass_and_away_from_ties_fail() {
        // Values [4, 3]: two positions of three classes; tokens = argmax along axis 1.
        let values = |v: &[f32]| f32s(&[4, 3], v);
        let reference = BTreeMap::from([
            (
                "p".to_string(),
                values(&[1.0, 1.00001, 0.2, 5.0, 1.0, 0.0, 0.3, 0.2, 0.1, -1.0, -1.0, 2.0]),
            ),
            ("t".to_string(), Tensor::from_i64(vec![4], &[1, 0, 0, 2]).unwrap()),
        ]);
        let pair = Pairings::from([(
            "t".to_string(),
            IndicesOf {
                values: "p".into(),
                axis: 1,
            },
        )]);
        let t = tols(&[
            (
                "p",
                OutputTolerance {
                    rtol: 1e-4,
                    atol: 1e-6,
                    miss_rate: 0.0,
                },
            ),
            ("t", OutputTolerance::EXACT),
        ]);
        let with_tokens = |tokens: &[i64]| {
            let mut c = reference.clone();
            c.insert("t".into(), Tensor::from_i64(vec![4], tokens).unwrap());
            c
        };
        assert_eq!(judge(&reference, &reference, &t, &pair), Ok(()));
        // Position 0: 1.0 vs 1.00001 is a near-tie at rtol 1e-4.
        assert_eq!(judge(&with_tokens(&[0, 0, 0, 2]), &reference, &t, &pair), Ok(()));
        // Position 1: 1.0 is far from 5.0.
        let err = judge(&with_tokens(&[1, 1, 0, 2]), &reference, &t, &pair).unwrap_err();
        match &err {
            JudgeError::Misses(c) => {
                assert_eq!((c.misses, c.allowed, c.total), (1, 0, 4));
                let w = c.worst.as_ref().unwrap();
                assert_eq!((w.index, w.actual, w.expected), (1, 1.0, 0.0));
                assert!((w.diff - 4.0).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        // An index out of range is a miss, never a panic.
        for bad in [3, -1, i64::MAX] {
            assert!(judge(&with_tokens(&[1, bad, 0, 2]), &reference, &t, &pair).is_err());
        }
        // Position 3: the exact tie (-1, -1) is no use to a cheat either: 2 is the max.
        assert!(judge(&with_tokens(&[1, 0, 0, 0]), &reference, &t, &pair).is_err());
        // Without the pairing, the integer output is judged exactly.
        assert!(judge(&with_tokens(&[0, 0, 0, 2]), &reference, &t, &Pairings::new()).is_err());
    }

    #[test]
    fn calibration_of_paired_indices_counts_only_flips_away_from_ties() {
        let run = |v: [f32; 6], t: [i64; 2]| {
            BTreeMap::from([
                ("p".to_string(), f32s(&[2, 3], &v)),
                ("t".to_string(), Tensor::from_i64(vec![2], &t).unwrap()),
            ])
        };
        // Row 0 is a near-tie that honest runs break both ways.
        let runs = [
            run([1.0, 1.000_000_1, 0.2, 5.0, 1.0, 0.0], [1, 0]),
            run([1.000_000_1, 1.0, 0.2, 5.0, 1.0, 0.0], [0, 0]),
        ];
        let pair = Pairings::from([(
            "t".to_string(),
            IndicesOf {
                values: "p".into(),
                axis: 1,
            },
        )]);
        let t = calibrate(&runs, 4.0, &pair).unwrap();
        assert_eq!(t["t"].miss_rate, MISS_RATE_FLOOR);
        assert_eq!(judge(&runs[1], &runs[0], &t, &pair), Ok(()));
        // Unpaired, the same runs differ at half the indices: nothing to check.
        assert!(matches!(
            calibrate(&runs, 4.0, &Pairings::new()),
            Err(CalibrateError::Unstable { .. })
        ));
        // A cheat that moves row 1's token is caught.
        let cheat = run([1.0, 1.000_000_1, 0.2, 5.0, 1.0, 0.0], [1, 1]);
        assert!(judge(&cheat, &runs[0], &t, &pair).is_err());
    }

    #[test]
    fn top_k_indices_are_judged_by_rank() {
        // Values [2, 4] (axis 1), top-2 indices [2, 2].
        let reference = BTreeMap::from([
            (
                "v".to_string(),
                f32s(&[2, 4], &[0.5, 3.0, 2.9999, 1.0, 4.0, 3.0, 2.0, 1.0]),
            ),
            ("i".to_string(), Tensor::from_i64(vec![2, 2], &[1, 2, 0, 1]).unwrap()),
        ]);
        let pair = Pairings::from([(
            "i".to_string(),
            IndicesOf {
                values: "v".into(),
                axis: 1,
            },
        )]);
        let t = tols(&[
            (
                "v",
                OutputTolerance {
                    rtol: 1e-4,
                    atol: 0.0,
                    miss_rate: 0.0,
                },
            ),
            ("i", OutputTolerance::EXACT),
        ]);
        let with = |i: &[i64]| {
            let mut c = reference.clone();
            c.insert("i".into(), Tensor::from_i64(vec![2, 2], i).unwrap());
            c
        };
        assert_eq!(judge(&with(&[2, 1, 0, 1]), &reference, &t, &pair), Ok(()));
        assert!(judge(&with(&[1, 3, 0, 1]), &reference, &t, &pair).is_err());
        assert!(judge(&with(&[1, 2, 1, 0]), &reference, &t, &pair).is_err());
        // Top-5 of four values cannot be.
        let mut bad = reference.clone();
        bad.insert("i".into(), Tensor::from_i64(vec![2, 5], &[0; 10]).unwrap());
        let err = judge(&bad, &bad, &t, &pair).unwrap_err();
        assert!(!err.is_disagreement(), "{err}");
    }

    #[test]
    fn nan_meets_nan_and_infinities_must_be_equal() {
        let tol = OutputTolerance {
            rtol: 0.1,
            atol: 0.1,
            miss_rate: 0.0,
        };
        let t = tols(&[("x", tol)]);
        let x = |v: &[f32]| one("x", f32s(&[v.len()], v));
        let r = x(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0]);
        assert_eq!(judge(&r, &r, &t, &Pairings::new()), Ok(()));
        for bad in [
            [1.0, f32::INFINITY, f32::NEG_INFINITY, 1.0],
            [f32::NAN, f32::MAX, f32::NEG_INFINITY, 1.0],
            [f32::NAN, f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0],
            [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN],
            [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY],
        ] {
            let err = judge(&x(&bad), &r, &t, &Pairings::new()).unwrap_err();
            assert!(matches!(&err, JudgeError::Misses(c) if c.misses == 1), "{bad:?}: {err}");
        }
    }

    #[test]
    fn hostile_or_missing_tolerances_and_pairings_are_refused_not_judged() {
        let r = one("x", f32s(&[2], &[1.0, 2.0]));
        let c = one("x", f32s(&[2], &[100.0, -2.0]));
        let ok = OutputTolerance {
            rtol: 1e-3,
            atol: 1e-6,
            miss_rate: 1e-6,
        };
        for bad in [
            OutputTolerance { rtol: f64::NAN, ..ok },
            OutputTolerance { rtol: -1e-3, ..ok },
            OutputTolerance { rtol: 1e3, ..ok },
            OutputTolerance {
                atol: f64::INFINITY,
                ..ok
            },
            OutputTolerance { atol: 1e300, ..ok },
            OutputTolerance { atol: -0.5, ..ok },
            OutputTolerance { miss_rate: 0.9, ..ok },
            OutputTolerance {
                miss_rate: f64::NAN,
                ..ok
            },
            OutputTolerance { miss_rate: -1e-9, ..ok },
        ] {
            let err = judge(&c, &r, &tols(&[("x", bad)]), &Pairings::new()).unwrap_err();
            assert!(matches!(err, JudgeError::Invalid { .. }), "{bad:?}: {err}");
            assert!(!err.is_disagreement());
        }
        let err = judge(&c, &r, &BTreeMap::new(), &Pairings::new()).unwrap_err();
        assert!(err.to_string().contains("no tolerance"), "{err}");
        for (name, p) in [
            (
                "x",
                IndicesOf {
                    values: "y".into(),
                    axis: 0,
                },
            ),
            (
                "y",
                IndicesOf {
                    values: "x".into(),
                    axis: 0,
                },
            ),
            (
                "x",
                IndicesOf {
                    values: "x".into(),
                    axis: 1,
                },
            ),
        ] {
            let pair = Pairings::from([(name.to_string(), p)]);
            let err = judge(&c, &r, &tols(&[("x", ok)]), &pair).unwrap_err();
            assert!(!err.is_disagreement(), "{err}");
        }
        // Indices that are floats are refused too.
        let two = BTreeMap::from([
            ("x".to_string(), f32s(&[2], &[1.0, 2.0])),
            ("y".to_string(), f32s(&[], &[0.0])),
        ]);
        let pair = Pairings::from([(
            "y".to_string(),
            IndicesOf {
                values: "x".into(),
                axis: 0,
            },
        )]);
        let err = judge(&two, &two, &tols(&[("x", ok), ("y", ok)]), &pair).unwrap_err();
        assert!(err.to_string().contains("must be integers"), "{err}");
        // Serialised tolerances are validated once they are read back.
        let json = serde_json::to_string(&ok).unwrap();
        let back: OutputTolerance = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ok);
        let hostile: OutputTolerance = serde_json::from_str(r#"{"rtol":1e308,"atol":0,"miss_rate":0}"#).unwrap();
        assert!(hostile.validate().is_err());
    }

    #[test]
    fn names_dtypes_and_shapes_must_match() {
        let t = tols(&[("x", OutputTolerance::EXACT)]);
        let r = one("x", f32s(&[2], &[1.0, 2.0]));
        let p = Pairings::new();
        assert_eq!(
            judge(&BTreeMap::new(), &r, &t, &p),
            Err(JudgeError::Missing("x".into()))
        );
        let mut extra = r.clone();
        extra.insert("z".into(), f32s(&[1], &[0.0]));
        assert_eq!(judge(&extra, &r, &t, &p), Err(JudgeError::Unexpected("z".into())));
        let shape = one("x", f32s(&[1, 2], &[1.0, 2.0]));
        assert!(matches!(
            judge(&shape, &r, &t, &p),
            Err(JudgeError::Form {
                mismatch: Mismatch::Shape(..),
                ..
            })
        ));
        let dtype = one("x", Tensor::from_i64(vec![2], &[1, 2]).unwrap());
        assert!(matches!(
            judge(&dtype, &r, &t, &p),
            Err(JudgeError::Form {
                mismatch: Mismatch::DType(..),
                ..
            })
        ));
    }

    #[test]
    fn calibration_floors_checks_its_runs_and_refuses_unstable_outputs() {
        let p = Pairings::new();
        let x = f32s(&[4], &[1.0, -2.0, 0.0, 3.0]);
        let ids = Tensor::from_i64(vec![4], &[1, 2, 3, 4]).unwrap();
        let run = BTreeMap::from([("x".to_string(), x.clone()), ("ids".to_string(), ids)]);
        // Bit-identical runs: floors, never zero for floats; integers exact.
        let t = calibrate(&[run.clone(), run.clone()], 4.0, &p).unwrap();
        assert_eq!(t["x"].rtol, 4.0 * f32::EPSILON as f64);
        assert!(t["x"].atol > 0.0);
        assert_eq!(t["x"].miss_rate, MISS_RATE_FLOOR);
        assert_eq!(t["ids"], OutputTolerance::EXACT);
        // Integers that differ honestly in one of four places: a rate, times safety.
        let mut other = run.clone();
        other.insert("ids".into(), Tensor::from_i64(vec![4], &[1, 2, 3, 5]).unwrap());
        let t = calibrate(&[run.clone(), other.clone()], 1.5, &p).unwrap();
        assert_eq!(t["ids"].miss_rate, 0.375);
        assert!(matches!(
            calibrate(&[run.clone(), other], 4.0, &p),
            Err(CalibrateError::Unstable { .. })
        ));
        assert_eq!(
            calibrate(std::slice::from_ref(&run), 4.0, &p),
            Err(CalibrateError::TooFewRuns(1))
        );
        for s in [0.5, f64::NAN, f64::INFINITY, 1e6] {
            assert!(matches!(
                calibrate(&[run.clone(), run.clone()], s, &p),
                Err(CalibrateError::Safety(_))
            ));
        }
        let mut short = run.clone();
        short.insert("x".into(), f32s(&[2], &[1.0, 2.0]));
        assert!(matches!(
            calibrate(&[run.clone(), short], 4.0, &p),
            Err(CalibrateError::Runs { run: 1, .. })
        ));
        let mut fewer = run.clone();
        fewer.remove("ids");
        assert!(matches!(
            calibrate(&[run.clone(), fewer], 4.0, &p),
            Err(CalibrateError::Runs { run: 1, .. })
        ));
        // Noise as large as the values: nothing to check numerically.
        let mut rng = Rng(8);
        let a: Vec<f32> = (0..1000).map(|_| rng.unit() as f32 + 0.5).collect();
        let b: Vec<f32> = (0..1000).map(|_| -(rng.unit() as f32) - 0.5).collect();
        assert!(matches!(
            calibrate(&[one("y", f32s(&[1000], &a)), one("y", f32s(&[1000], &b))], 4.0, &p),
            Err(CalibrateError::Unstable { .. })
        ));
    }

    #[test]
    fn calibration_fits_an_absolute_floor_where_errors_do_not_shrink_with_the_value() {
        // Errors of about 1e-4 everywhere, on values from 0 to 10: a purely
        // relative tolerance would have to be huge near zero.
        let mut rng = Rng(4);
        let n = 10_000;
        let a: Vec<f32> = (0..n).map(|_| (rng.unit() * 20.0 - 10.0) as f32).collect();
        let b: Vec<f32> = a.iter().map(|&x| x + ((rng.unit() - 0.5) * 2e-4) as f32).collect();
        let t = calibrate(
            &[one("y", f32s(&[n], &a)), one("y", f32s(&[n], &b))],
            4.0,
            &Pairings::new(),
        )
        .unwrap();
        let tol = t["y"];
        assert!(tol.atol > 1e-5 && tol.atol < 1e-2, "{tol:?}");
        assert!(tol.rtol < 1e-2, "{tol:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_result_always_agrees_with_itself(
            v in proptest::collection::vec(
                prop_oneof![
                    8 => -1e6f32..1e6f32,
                    1 => Just(f32::NAN),
                    1 => Just(f32::INFINITY),
                    1 => Just(0.0f32),
                ],
                0..300,
            ),
            rtol in 0.0f64..1.0,
            atol in 0.0f64..1.0,
            miss_rate in 0.0f64..0.5,
        ) {
            let x = one("x", f32s(&[v.len()], &v));
            for tol in [OutputTolerance { rtol, atol, miss_rate }, OutputTolerance::EXACT] {
                prop_assert_eq!(judge(&x, &x, &tols(&[("x", tol)]), &Pairings::new()), Ok(()));
            }
        }

        #[test]
        fn scaling_a_tenth_of_the_elements_by_one_and_a_half_is_caught(
            n in 1000usize..20_000,
            seed in any::<u64>(),
            rtol in 0.0f64..0.2,
            atol in 0.0f64..0.01,
            miss_rate in 0.0f64..1e-3,
        ) {
            let mut rng = Rng(seed | 1);
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let m = 0.1 + rng.unit() * 100.0;
                    (if rng.below(2) == 0 { m } else { -m }) as f32
                })
                .collect();
            let mut w = v.clone();
            for i in rng.pick(n, n / 10) {
                w[i] *= 1.5;
            }
            let t = tols(&[("x", OutputTolerance { rtol, atol, miss_rate })]);
            let r = judge(&one("x", f32s(&[n], &w)), &one("x", f32s(&[n], &v)), &t, &Pairings::new());
            prop_assert!(matches!(r, Err(JudgeError::Misses(_))), "{:?}", r);
        }
    }
}
