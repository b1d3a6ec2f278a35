//! The Bayesian token scorer: a tokenizer over the MIME view ([`mod@tokenize`]), a classifier that
//! gives an unclamped log-odds score ([`model`]) plus a linear layer learnt online over the same
//! features and the message's byte 4-grams ([`linear`]), and token stores ([`store`]): an in-memory one
//! for tests and benches, LMDB (the embedded default, shared by `serve` and `strainer train`
//! running at once) and Redis (one model for several hosts).
//!
//! [`Bayes`] ties them together: learn a message as spam or ham (once: a content digest remembers
//! what was learnt), forget it, classify it.
//!
//! Why two models: the counting one (Fisher) is robust from the first hundred messages and never
//! drifts with training order, but treats every feature as independent evidence; the linear
//! layer uses overlapping evidence (word pairs, 4-grams of the raw bytes) and learns, message by
//! message, only what Fisher gets wrong. On the SpamAssassin corpus the pair halves 1-AUC against
//! Fisher alone on the half split and beats it on the time split (benches/README.md).
#![deny(missing_docs)]

pub mod ignore;
pub mod linear;
pub mod model;
pub mod store;
pub mod tokenize;

pub use ignore::IgnoreHeaders;
pub use linear::Vector;
pub use model::{Counts, Method, Params, Score, Totals};
pub use store::{Class, Digest, Error, Expiry, Item, Learned, Stats, Store};
pub use tokenize::{Options, Tokens, tokenize};

use strainer_mime::View;

/// The score at and above which the scorer alone calls a message spam: the lowest that kept FP
/// at or under 0.1% in every training order on the corpus's half split (benches/README.md).
pub const DEFAULT_THRESHOLD: f64 = 6.5;

/// A tokenizer, classifier settings and a store.
pub struct Bayes<S> {
    /// The token store.
    pub store: S,
    /// Tokenizer settings.
    pub options: Options,
    /// Classifier settings.
    pub params: Params,
}

/// The result of classifying one message.
#[derive(Debug, Clone)]
pub struct Classified {
    /// The score.
    pub score: Score,
    /// Messages learnt when it was scored.
    pub totals: Totals,
    /// The strongest features either way, with their text and f(w), when asked for.
    pub explain: Vec<(String, f64, Counts)>,
    /// The features that moved the linear layer's share of the score most either way, with
    /// their text and that share, when asked for; last, what the 4-grams (which have no text)
    /// added between them.
    pub linear: Vec<(String, f64)>,
}

impl<S: Store> Bayes<S> {
    /// A scorer over a store with default settings.
    pub fn new(store: S) -> Self {
        Bayes { store, options: Options::default(), params: Params::default() }
    }

    /// Classifies message `raw` (taken apart as `view`); `explain` keeps that many strongest
    /// features with their text.
    pub fn classify(&self, raw: &[u8], view: &View, explain: usize) -> Result<Classified, Error> {
        let (tokens, vector) = self.features(raw, view, explain > 0);
        self.classify_tokens(&tokens, &vector, explain)
    }

    /// The features of message `raw` (taken apart as `view`) and its linear vector, with the
    /// features' text when `names`.
    pub fn features(&self, raw: &[u8], view: &View, names: bool) -> (Tokens, Vector) {
        let tokens = tokenize(view, &self.options, names);
        let vector = Vector::of(&tokens.hashes, raw, &self.options.ignore);
        (tokens, vector)
    }

    /// Classifies already tokenized features and their linear vector.
    pub fn classify_tokens(&self, tokens: &Tokens, vector: &Vector, explain: usize) -> Result<Classified, Error> {
        let mut counts = Vec::with_capacity(tokens.hashes.len());
        let (totals, margin) = self.store.evidence(&tokens.hashes, &mut counts, vector)?;
        let mut score = model::classify(&counts, totals, &self.params, explain);
        score.add_margin(margin);
        let linear = if explain > 0 { self.explain_linear(tokens, vector, score.margin, explain)? } else { Vec::new() };
        let explain = score
            .strongest
            .iter()
            .map(|&(i, f)| {
                let h = tokens.hashes[i];
                (tokens.name(h).unwrap_or("?").to_string(), f, counts[i])
            })
            .collect();
        Ok(Classified { score, totals, explain, linear })
    }

    /// Each named feature's share of the linear layer's part of the score (a bucket shared by
    /// several features is named after one of them), the `n` largest either way, then what the
    /// 4-grams added (the linear part less every named feature's share).
    fn explain_linear(
        &self,
        tokens: &Tokens,
        vector: &Vector,
        margin: f64,
        n: usize,
    ) -> Result<Vec<(String, f64)>, Error> {
        let mut named: Vec<(u32, &str)> = tokens
            .hashes
            .iter()
            .filter_map(|&h| tokens.name(h).map(|name| (linear::bucket_of_hash(h), name)))
            .collect();
        named.sort_unstable_by_key(|b| b.0);
        named.dedup_by_key(|b| b.0);
        let buckets: Vec<u32> = named.iter().map(|b| b.0).collect();
        let weights = self.store.weights(&buckets)?;
        let mut parts: Vec<(String, f64)> = Vec::with_capacity(named.len());
        for ((bucket, name), w) in named.iter().zip(weights) {
            if let Some(v) = vector.token_value(*bucket) {
                parts.push((name.to_string(), linear::SCALE * f64::from(w) * f64::from(v)));
            }
        }
        let rest = linear::SCALE * margin - parts.iter().map(|p| p.1).sum::<f64>();
        parts.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        parts.truncate(n);
        parts.push(("4-grams".to_string(), rest));
        Ok(parts)
    }

    /// Learns (or with `forget`, unlearns) one message.
    pub fn learn(&self, raw: &[u8], view: &View, class: Class, forget: bool) -> Result<Learned, Error> {
        let tokens = tokenize(view, &self.options, false);
        let item = Item::new(raw, class, tokens.hashes, &self.options.ignore);
        let mut out = self.store.learn_with(std::slice::from_ref(&item), forget, &self.params)?;
        Ok(out.pop().unwrap_or(Learned::Unchanged))
    }
}
