//! The classifier: per-feature spam probabilities combined into one unclamped log-odds score.
//!
//! Each feature gets Robinson's smoothed probability `f(w) = (s·x + n·p(w)) / (s + n)`, where
//! `p(w)` compares how often the feature appears in spam and in ham (each relative to the number
//! of messages learnt) and `n` is how many messages had it. Features with `|f - 0.5|` under
//! `min_dev` are ignored. The rest are combined with Fisher's method as bogofilter and
//! SpamAssassin do: `H` and `S` are the chi-square tail probabilities of the ham and spam
//! hypotheses and Robinson's indicator is `I = (1 + H - S) / 2`. Those programs report `I`, which
//! rounds to exactly 0 or 1 for hundreds of messages; the score here is `ln(I / (1 - I))` computed
//! from the logs of the tails (`I ∝ P(ss) + Q(hs)`, `1 - I ∝ P(hs) + Q(ss)`), so it never rounds
//! and two messages tie only when their evidence is the same. A message with strong evidence both
//! ways lands near 0, "unsure", as in bogofilter. Long messages count as at most `evidence_cap`
//! features of their average strength: their words are far from independent.
//!
//! Why this: on the half split of the SpamAssassin corpus the plain naive Bayes sum of log-odds
//! ranked worst (its errors are over-confident), `ln H - ln S` sank long ambiguous spam below every
//! ham, keeping only the strongest features (SpamAssassin) lost recall; the logit of the indicator
//! with the cap and a small prior strength ranked best. The figures are in benches/README.md.

use serde::Serialize;

/// How often a feature was seen in learnt spam and ham.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Spam messages that had it.
    pub spam: u32,
    /// Ham messages that had it.
    pub ham: u32,
}

/// How many messages were learnt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Spam messages learnt.
    pub spam: u64,
    /// Ham messages learnt.
    pub ham: u64,
}

/// How to combine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// Fisher's chi-square combination in log space (the default).
    Fisher,
    /// Sum of per-feature log-odds.
    NaiveBayes,
    /// Fisher plus `w` times the naive Bayes sum over at most `cap` features.
    Combined(f64, usize),
}

/// Classifier settings.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Robinson's strength of the prior (`s`).
    pub strength: f64,
    /// Robinson's prior for an unseen feature (`x`).
    pub prior: f64,
    /// Features closer to 0.5 than this are ignored.
    pub min_dev: f64,
    /// The combination.
    pub method: Method,
    /// Strongest features kept (0: all).
    pub max_features: usize,
    /// Most features counted as independent evidence (0: no cap).
    pub evidence_cap: usize,
    /// Passes of the linear layer over a training batch after the first ([`crate::linear`]).
    pub revisits: usize,
    /// Runs of the linear layer over a training batch, each in another order, averaged
    /// ([`crate::linear`]; 1: the batch's own order alone).
    pub orders: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            strength: 0.05,
            prior: 0.5,
            min_dev: 0.1,
            method: Method::Fisher,
            max_features: 0,
            evidence_cap: 150,
            revisits: 2,
            orders: 2,
        }
    }
}

/// A classification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Unclamped log-odds of spam: positive spammy, negative hammy, 0 without evidence.
    pub log_odds: f64,
    /// The same as a probability (rounds to 0 or 1 far from the middle; rank by `log_odds`).
    pub probability: f64,
    /// Features that counted.
    pub used: usize,
    /// The linear layer's margin (about ±1 for messages like those learnt), already in `log_odds`.
    pub margin: f64,
    /// The strongest features either way: (index into the message's features, f(w)).
    pub strongest: Vec<(usize, f64)>,
}

/// Robinson's smoothed spam probability of one feature.
pub fn feature_probability(c: Counts, totals: Totals, p: &Params) -> f64 {
    Smoothing::new(totals, p).probability(c)
}

/// What Robinson's smoothing needs for every feature of a message, worked out once (classifying
/// divided by the totals for each of 400 features).
struct Smoothing {
    /// 1 / spam learnt and 1 / ham learnt; 0 when either is 0 (every feature then gets the prior).
    inv: (f64, f64),
    strength: f64,
    prior: f64,
}

impl Smoothing {
    fn new(totals: Totals, p: &Params) -> Smoothing {
        let inv = if totals.spam == 0 || totals.ham == 0 {
            (0.0, 0.0)
        } else {
            (1.0 / totals.spam as f64, 1.0 / totals.ham as f64)
        };
        Smoothing { inv, strength: p.strength, prior: p.prior }
    }

    fn probability(&self, c: Counts) -> f64 {
        let n = f64::from(c.spam) + f64::from(c.ham);
        if n == 0.0 || self.inv.0 == 0.0 {
            return self.prior;
        }
        // (s·P + n·pw) / (s + n) with pw = bs / (bs + gh), over one division.
        let bs = f64::from(c.spam) * self.inv.0;
        let both = bs + f64::from(c.ham) * self.inv.1;
        (self.strength * self.prior * both + n * bs) / ((self.strength + n) * both)
    }
}

/// Combines the counts of a message's features (in the same order as its features).
pub fn classify(counts: &[Counts], totals: Totals, p: &Params, keep_strongest: usize) -> Score {
    let mut fs: Vec<(usize, f64)> = Vec::with_capacity(counts.len());
    let smoothing = Smoothing::new(totals, p);
    for (i, c) in counts.iter().enumerate() {
        if c.spam == 0 && c.ham == 0 {
            continue;
        }
        let f = smoothing.probability(*c);
        if (f - 0.5).abs() >= p.min_dev {
            fs.push((i, f.clamp(1e-9, 1.0 - 1e-9)));
        }
    }
    if p.max_features > 0 && fs.len() > p.max_features {
        fs.sort_by(|a, b| (b.1 - 0.5).abs().total_cmp(&(a.1 - 0.5).abs()));
        fs.truncate(p.max_features);
    }
    let log_odds = match p.method {
        Method::NaiveBayes => naive_bayes(&fs, p.evidence_cap),
        Method::Combined(w, cap) => fisher(&fs, p.evidence_cap) + w * naive_bayes(&fs, cap),
        Method::Fisher => fisher(&fs, p.evidence_cap),
    };
    let probability = 1.0 / (1.0 + (-log_odds).exp());
    let mut strongest = Vec::new();
    if keep_strongest > 0 {
        fs.sort_by(|a, b| (b.1 - 0.5).abs().total_cmp(&(a.1 - 0.5).abs()));
        strongest = fs.iter().take(keep_strongest).copied().collect();
    }
    Score { log_odds, probability, used: fs.len(), strongest, margin: 0.0 }
}

impl Score {
    /// Adds the linear layer's margin to the log-odds (scaled by [`crate::linear::SCALE`]).
    pub fn add_margin(&mut self, margin: f64) {
        self.margin = margin;
        self.log_odds += crate::linear::SCALE * margin;
        self.probability = 1.0 / (1.0 + (-self.log_odds).exp());
    }
}

/// The sum of the features' log-odds, counting at most `cap` of them (0: no cap).
fn naive_bayes(fs: &[(usize, f64)], cap: usize) -> f64 {
    let sum: f64 = fs.iter().map(|(_, f)| (f / (1.0 - f)).ln()).sum();
    if cap > 0 && fs.len() > cap { sum * cap as f64 / fs.len() as f64 } else { sum }
}

/// The logit of Robinson's indicator over features `fs`, counting at most `cap` of them.
fn fisher(fs: &[(usize, f64)], cap: usize) -> f64 {
    if fs.is_empty() {
        return 0.0;
    }
    let mut hs = -2.0 * ln_product(fs.iter().map(|(_, f)| *f));
    let mut ss = -2.0 * ln_product(fs.iter().map(|(_, f)| 1.0 - f));
    let mut n = fs.len();
    if cap > 0 && n > cap {
        // Long messages: the features are far from independent, so count them as `cap`
        // features of the same average strength.
        let k = cap as f64 / n as f64;
        hs *= k;
        ss *= k;
        n = cap;
    }
    // logit of Robinson's I = (1 + H - S) / 2 with H = Q(hs), S = Q(ss):
    // I ∝ P(ss) + Q(hs) and 1 - I ∝ P(hs) + Q(ss), each summed in log space.
    // Each tail's Q once: P is worked out from it.
    let (qs, qh) = (ln_chi2q(ss, n), ln_chi2q(hs, n));
    let spam = log_add(ln_chi2p_from(ss, n, qs), qh);
    let ham = log_add(ln_chi2p_from(hs, n, qh), qs);
    spam - ham
}

/// `ln` of the product of `values` (each in [1e-9, 1]): one logarithm per 32 factors instead of
/// one per factor (the logarithms were a third of classifying).
fn ln_product(values: impl Iterator<Item = f64>) -> f64 {
    let mut sum = 0.0;
    let mut prod = 1.0;
    for (i, v) in values.enumerate() {
        prod *= v;
        // 32 factors of at least 1e-9 stay above f64's smallest normal (1e-288 > 2.2e-308).
        if i % 32 == 31 {
            sum += prod.ln();
            prod = 1.0;
        }
    }
    sum + prod.ln()
}

/// Above this a running sum is scaled down (and the scale kept as a logarithm).
const BIG: f64 = 1e280;

/// `ln Q(chi | 2n)`: log of the upper tail of the chi-square distribution with `2n` degrees of
/// freedom: `-m + ln Σ_{i<n} m^i / i!` with `m = chi / 2`, the sum taken in linear space with
/// a running scale so it neither overflows nor needs a logarithm per term.
pub fn ln_chi2q(chi: f64, n: usize) -> f64 {
    let m = chi / 2.0;
    if m <= 0.0 {
        return 0.0;
    }
    let (sum, scale) = poisson_head(m, n);
    (-m + sum.ln() + scale).min(0.0)
}

/// `Σ_{i<n} m^i / i!` as (sum, ln scale): the sum is to be multiplied by `e^scale`.
fn poisson_head(m: f64, n: usize) -> (f64, f64) {
    let (mut t, mut sum, mut scale) = (1.0f64, 1.0f64, 0.0f64);
    // A term is at most m times the one before. Below 1e5, four terms from under BIG stay
    // under f64::MAX (1e280 · 1e20), so the sum is checked every fourth term (checking every
    // term was a third of classifying's instructions).
    let every = if m < 1e5 { 4 } else { 1 };
    let mut i = 1;
    while i < n {
        let end = (i + every).min(n);
        while i < end {
            t *= m * reciprocal(i);
            sum += t;
            i += 1;
        }
        if sum > BIG {
            sum /= BIG;
            t /= BIG;
            scale += BIG.ln();
        }
    }
    (sum, scale)
}

/// `1 / i`, from a table for the usual sizes (a multiply instead of a divide per term).
fn reciprocal(i: usize) -> f64 {
    static TABLE: [f64; 1025] = {
        let mut t = [0.0; 1025];
        let mut i = 1;
        while i < t.len() {
            t[i] = 1.0 / i as f64;
            i += 1;
        }
        t
    };
    match TABLE.get(i) {
        Some(r) => *r,
        None => 1.0 / i as f64,
    }
}

/// `ln P(chi | 2n)`: log of the lower tail (`1 - Q`), accurate when it is tiny.
pub fn ln_chi2p(chi: f64, n: usize) -> f64 {
    ln_chi2p_from(chi, n, ln_chi2q(chi, n))
}

/// [`ln_chi2p`] given `lq`, the same tail's `ln Q`.
fn ln_chi2p_from(chi: f64, n: usize, lq: f64) -> f64 {
    if lq < -std::f64::consts::LN_2 {
        return (-lq.exp()).ln_1p();
    }
    // Q >= 1/2: P = e^-m Σ_{i>=n} m^i / i!, summed from i = n until the terms vanish, relative
    // to its first term.
    let m = chi / 2.0;
    if m <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let first = -m + (n as f64) * m.ln() - ln_factorial(n);
    let (mut r, mut acc) = (1.0f64, 1.0f64);
    let mut i = n;
    loop {
        i += 1;
        r *= m * reciprocal(i);
        acc += r;
        if ((i as f64) > m && r < acc * 1e-17) || i > n + 100_000 {
            break;
        }
        if acc > BIG {
            // Only when m is far above n, where Q >= 1/2 does not hold; keep it finite anyway.
            break;
        }
    }
    (first + acc.ln()).min(0.0)
}

/// `ln n!`, from a table for the usual sizes.
fn ln_factorial(n: usize) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = Vec::with_capacity(1025);
        let mut acc = 0.0;
        t.push(0.0);
        for i in 1..=1024 {
            acc += (i as f64).ln();
            t.push(acc);
        }
        t
    });
    match table.get(n) {
        Some(v) => *v,
        None => table[1024] + (1025..=n).map(|i| (i as f64).ln()).sum::<f64>(),
    }
}

/// `ln(e^a + e^b)`.
fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2q_matches_known_values() {
        // Q(2 | 2) = e^-1
        assert!((ln_chi2q(2.0, 1) - (-1.0)).abs() < 1e-12);
        // Q(4 | 4) = e^-2 (1 + 2) = 0.40600584970983811
        assert!((ln_chi2q(4.0, 2).exp() - 0.406_005_849_709_838_1).abs() < 1e-12);
        // P + Q = 1.
        for (chi, n) in [(3.0, 2), (40.0, 3), (0.5, 5), (200.0, 150)] {
            let sum = ln_chi2p(chi, n).exp() + ln_chi2q(chi, n).exp();
            assert!((sum - 1.0).abs() < 1e-9, "{chi} {n}: {sum}");
        }
        // Far in the tail it stays finite.
        assert!(ln_chi2q(1e6, 3).is_finite());
    }

    /// The log-space series this module used before: slow, but plainly right.
    fn ref_ln_chi2q(chi: f64, n: usize) -> f64 {
        let m = chi / 2.0;
        if m <= 0.0 {
            return 0.0;
        }
        let lm = m.ln();
        let mut lt = 0.0f64;
        let mut terms = Vec::new();
        for i in 0..n {
            if i > 0 {
                lt += lm - (i as f64).ln();
            }
            terms.push(lt);
        }
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
        (-m + max + sum.ln()).min(0.0)
    }

    fn ref_ln_chi2p(chi: f64, n: usize) -> f64 {
        let lq = ref_ln_chi2q(chi, n);
        if lq < -std::f64::consts::LN_2 {
            return (-lq.exp()).ln_1p();
        }
        let m = chi / 2.0;
        let lm = m.ln();
        let mut lt = -m + (n as f64) * lm - (1..=n).map(|i| (i as f64).ln()).sum::<f64>();
        let mut acc = lt;
        let mut i = n;
        loop {
            i += 1;
            lt += lm - (i as f64).ln();
            acc = log_add(acc, lt);
            if (i as f64) > m && lt < acc - 40.0 {
                break;
            }
        }
        acc.min(0.0)
    }

    proptest::proptest! {
        #[test]
        fn fast_tails_match_the_log_space_series(chi in proptest::prop_oneof![0.0f64..4000.0, 4000.0f64..300_000.0], n in 1usize..1200) {
            let (q, rq) = (ln_chi2q(chi, n), ref_ln_chi2q(chi, n));
            proptest::prop_assert!((q - rq).abs() <= 1e-9 * rq.abs().max(1.0), "Q {chi} {n}: {q} vs {rq}");
            let (p, rp) = (ln_chi2p(chi, n), ref_ln_chi2p(chi, n));
            proptest::prop_assert!((p - rp).abs() <= 1e-9 * rp.abs().max(1.0), "P {chi} {n}: {p} vs {rp}");
        }

        #[test]
        fn ln_product_is_the_sum_of_logs(v in proptest::collection::vec(1e-9f64..=1.0, 0..300)) {
            let want: f64 = v.iter().map(|x| x.ln()).sum();
            let got = ln_product(v.iter().copied());
            proptest::prop_assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0));
        }
    }

    #[test]
    fn spammy_features_score_positive() {
        let t = Totals { spam: 100, ham: 100 };
        let spammy = vec![Counts { spam: 50, ham: 1 }; 20];
        let hammy = vec![Counts { spam: 1, ham: 50 }; 20];
        let p = Params::default();
        assert!(classify(&spammy, t, &p, 0).log_odds > 5.0);
        assert!(classify(&hammy, t, &p, 0).log_odds < -5.0);
        assert_eq!(classify(&[], t, &p, 0).log_odds, 0.0);
    }
}
