//! Entry points shared by the fuzz targets (`tests/fuzz`) and the regression test that replays
//! saved crashers; each must return normally for any input.

use strainer_mime::{Limits, analyze};

/// Takes arbitrary bytes apart as a message and runs the banned-files check over them.
pub fn mime_view(data: &[u8]) {
    let limits = Limits { max_decoded_bytes: 4 << 20, ..Limits::default() };
    let view = analyze(data, &limits);
    if let Ok(b) = strainer_attachments::Banned::parse(crate::scanners::BUILTIN_BANNED, "builtin") {
        let _ = b.check(&view);
    }
}

/// Parses arbitrary bytes as an SMTP command line.
pub fn smtp_command(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = strainer_receive::command::parse(s);
    }
    let lines: Vec<String> = String::from_utf8_lossy(data).lines().map(String::from).collect();
    let _ = strainer_types::Reply::parse(&lines);
}

/// Feeds arbitrary bytes to the DATA decoder in two chunks split at the first byte's value.
pub fn data_decoder(data: &[u8]) {
    let cut = data.first().map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut d = strainer_receive::data::DataDecoder::new(1 << 16);
    let f = d.feed(&data[..cut]);
    if !f.done {
        let _ = d.feed(&data[cut..]);
    }
    let msg = d.into_message();
    let mut wire = Vec::new();
    strainer_receive::data::stuff(&msg, &mut wire);
}

/// Parses arbitrary text as a Postfix regexp table and looks its own first line up.
pub fn rules_table(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = strainer_rules::Table::parse(&text, "fuzz") {
        let _ = t.lookup(text.lines().next().unwrap_or(""));
    }
}

/// Parses arbitrary text as a banned-files rule file.
pub fn banned_rules(data: &[u8]) {
    let _ = strainer_attachments::Banned::parse(&String::from_utf8_lossy(data), "fuzz");
}

/// Parses arbitrary text as a configuration file.
pub fn config(data: &[u8]) {
    let _ = crate::config::Config::parse(&String::from_utf8_lossy(data), "fuzz");
}

/// Takes arbitrary bytes apart as a message and tokenizes it for Bayes (with feature names and
/// the linear layer's vector).
pub fn bayes_tokens(data: &[u8]) {
    let limits = Limits { max_decoded_bytes: 4 << 20, ..Limits::default() };
    let view = analyze(data, &limits);
    let t = strainer_bayes::tokenize(&view, &strainer_bayes::Options::default(), true);
    let counts = vec![strainer_bayes::Counts { spam: 3, ham: 1 }; t.hashes.len()];
    let totals = strainer_bayes::Totals { spam: 10, ham: 10 };
    let mut s = strainer_bayes::model::classify(&counts, totals, &strainer_bayes::Params::default(), 5);
    // The linear layer's view of the same bytes: one step on it lands on the asked side.
    let x = strainer_bayes::Vector::of(&t.hashes, data, &Default::default());
    let mut w = vec![0f32; strainer_bayes::linear::DIM];
    strainer_bayes::linear::apply(&mut w, &x, None, Some(strainer_bayes::Class::Spam), 0.0);
    let margin = x.dot(|i| w[i as usize]);
    assert!(x.is_empty() || (margin - 1.0).abs() < 1e-3, "a step must reach the margin: {margin}");
    s.add_margin(margin);
    assert!(s.log_odds.is_finite(), "score must be finite");
}
