//! Running clamd over what the MIME view extracted, and the raw message.

use futures_util::future::join_all;
use strainer_clamav::{ClamError, Client, Verdict};
use strainer_types::Finding;

use crate::scanners::Report;

/// Streams every decoded leaf part, archive member and (when configured) the raw message to
/// clamd, concurrently up to the client's limit. Returns the findings (viruses, parts too large
/// to send), or the first error when clamd could not give a verdict on something.
///
/// Decoded text parts go too only where clamd's own reading of the raw message could differ
/// from ours: a part decoded lossily, or a message whose MIME structure is ambiguous or broken.
/// Otherwise clamd decodes the same text from the raw message, and sending it twice doubled
/// clamd's work and the streams per message (issue #7's profile).
pub async fn scan(client: &Client, message: &[u8], report: &Report) -> Result<Vec<Finding>, ClamError> {
    let max = client.config().max_stream;
    let mut findings = Vec::new();
    let mut items: Vec<(String, &[u8])> = Vec::new();
    let raw_covers_text = client.config().scan_raw_message
        && !report.view.findings.iter().any(|f| f.name.starts_with("MIME_") || f.name.starts_with("ARCHIVE_"));
    for p in &report.view.parts {
        let bytes: &[u8] = match (&p.data, &p.text) {
            (Some(d), _) => d,
            (None, Some(_)) if raw_covers_text && !p.sloppy && p.origin == strainer_mime::Origin::Mime => continue,
            (None, Some(t)) => t.as_bytes(),
            _ => continue,
        };
        if bytes.is_empty() {
            continue;
        }
        if bytes.len() as u64 > max {
            findings.push(
                Finding::new("CLAMAV_UNSCANNED_SIZE", format!("{} bytes, over clamav.max_stream", bytes.len()))
                    .at(p.path.clone()),
            );
            continue;
        }
        items.push((p.path.clone(), bytes));
    }
    if client.config().scan_raw_message {
        if message.len() as u64 > max {
            findings.push(Finding::new(
                "CLAMAV_UNSCANNED_SIZE",
                format!("raw message of {} bytes, over clamav.max_stream", message.len()),
            ));
        } else {
            items.push(("raw".into(), message));
        }
    }
    let results = join_all(items.iter().map(|(_, data)| client.scan(data))).await;
    for ((path, _), r) in items.iter().zip(results) {
        match r? {
            Verdict::Clean => {}
            Verdict::Virus(name) => {
                let f = Finding::new("CLAMAV_VIRUS", name);
                findings.push(if path == "raw" { f } else { f.at(path.clone()) });
            }
        }
    }
    Ok(findings)
}
