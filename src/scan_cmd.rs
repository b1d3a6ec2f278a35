//! `strainer scan`: take messages apart and show what strainer sees and would do.

use std::fmt::Write;

use crate::decide::{Decision, Outcome};
use crate::scanners::Report;

/// Turns a file as stored (mbox `From ` line, LF line ends) into a message as SMTP carries it.
pub fn as_received(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.starts_with(b"From ") {
        let end = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
        bytes.drain(..end);
    }
    if memchr::memmem::find(&bytes, b"\r\n").is_some() {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    let mut from = 0;
    for nl in memchr::memchr_iter(b'\n', &bytes) {
        out.extend_from_slice(&bytes[from..nl]);
        out.extend_from_slice(b"\r\n");
        from = nl + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out
}

fn human_size(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// What `decide` would make strainer answer.
pub fn answer(o: &Outcome) -> String {
    match &o.decision {
        Decision::Deliver { add, remove } => {
            let mut s = "deliver".to_string();
            if !add.is_empty() {
                let names: Vec<&str> = add.iter().filter_map(|h| h.split(':').next()).collect();
                let _ = write!(s, ", adding {}", names.join(", "));
            }
            if !remove.is_empty() {
                let _ = write!(s, ", removing {} header(s)", remove.len());
            }
            s
        }
        Decision::Reject(r) => format!("reject: {}", r.one_line()),
        Decision::Quarantine { category, reason } => format!("quarantine ({category} {reason})"),
        Decision::Tempfail => "tempfail (4xx)".into(),
        Decision::Discard(_) => "discard (250, not delivered)".into(),
    }
}

/// The human-readable report for one message.
pub fn render(label: &str, report: &Report, o: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "== {label}");
    for (k, v) in
        report.view.headers.iter().filter(|(k, _)| ["from", "to", "subject"].contains(&k.to_ascii_lowercase().as_str()))
    {
        let _ = writeln!(s, "{k}: {v}");
    }
    let _ = writeln!(s, "parts:");
    let width = report.view.parts.iter().map(|p| p.path.chars().count()).max().unwrap_or(1).min(40);
    for p in &report.view.parts {
        let mut line = format!("  {:width$}  ", p.path);
        let ty =
            if p.content_type.is_empty() { format!("({:?})", p.origin).to_lowercase() } else { p.content_type.clone() };
        let _ = write!(line, "{ty:<28}");
        if !p.names.is_empty() {
            let names: Vec<String> = p.names.iter().map(|n| format!("{n:?}")).collect();
            let _ = write!(line, " {}", names.join(" / "));
        }
        let _ = write!(line, "  {}", human_size(p.size));
        if let Some(k) = p.sniffed {
            let _ = write!(line, "  sniffed:{}", k.name());
        }
        if p.encrypted {
            line.push_str("  encrypted");
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    if report.findings.is_empty() {
        let _ = writeln!(s, "findings: none");
    } else {
        let _ = writeln!(s, "findings:");
        for f in &report.findings {
            let _ = writeln!(s, "  {f}");
        }
    }
    let _ = writeln!(s, "verdict: {} (score {:.2}) -> {}", o.verdict, o.score, answer(o));
    if let Some(class) = autolearn(report, o) {
        let _ = writeln!(s, "autolearn: serve would learn it as {class} (bayes.autolearn)");
    }
    s
}

/// What `serve` would autolearn the message as, if anything.
fn autolearn(report: &Report, o: &Outcome) -> Option<&'static str> {
    let item = report.learn.as_ref().filter(|i| crate::autolearn::agrees(i.class, &report.findings, o.verdict))?;
    Some(item.class.name())
}

/// The machine-readable report for one message.
pub fn render_json(label: &str, report: &Report, o: &Outcome) -> serde_json::Value {
    serde_json::json!({
        "file": label,
        "parts": report.view.parts,
        "findings": report.findings,
        "rule_hits": report.hits,
        "verdict": o.verdict,
        "score": o.score,
        "action": answer(o),
        "autolearn": autolearn(report, o),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbox_line_and_lf_are_converted() {
        assert_eq!(as_received(b"From a@b Mon\nSubject: x\n\nhi\n".to_vec()), b"Subject: x\r\n\r\nhi\r\n");
        assert_eq!(as_received(b"Subject: x\r\n\r\nhi\n".to_vec()), b"Subject: x\r\n\r\nhi\n");
    }
}
