//! The shipped rule file against each evasion and each clean look-alike.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../tests/fixtures/mod.rs"]
mod fixtures;

use fixtures::*;
use strainer_attachments::Banned;
use strainer_mime::{Limits, analyze};

fn shipped() -> Banned {
    Banned::parse(include_str!("../../../filters/banned.rules"), "filters/banned.rules").unwrap()
}

/// Finding names (sorted, deduplicated) with the part paths they name.
fn findings(msg: &[u8]) -> Vec<(String, String)> {
    let v = analyze(msg, &Limits::default());
    let mut f: Vec<(String, String)> =
        shipped().check(&v).into_iter().map(|f| (f.name, f.part.unwrap_or_default())).collect();
    f.sort();
    f.dedup();
    f
}

fn names(msg: &[u8]) -> Vec<String> {
    let mut n: Vec<String> = findings(msg).into_iter().map(|(n, _)| n).collect();
    n.dedup();
    n
}

#[test]
fn evasions() {
    let zip_exe = zip(&[Entry::new("setup.exe", PE)]);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("plain exe", named("run.exe", "application/octet-stream", PE), &["BANNED_EXT", "BANNED_SNIFFED"]),
        (
            "double extension",
            named("invoice.pdf.exe", "application/pdf", PE),
            &["BANNED_DOUBLE_EXT", "BANNED_EXT", "BANNED_SNIFFED"],
        ),
        ("trailing dot", named("invoice.exe.", "application/octet-stream", b"x"), &["BANNED_EXT", "BANNED_TRAILING"]),
        ("trailing space", named("invoice.scr ", "application/octet-stream", b"x"), &["BANNED_EXT", "BANNED_TRAILING"]),
        (
            "right-to-left override",
            with_attachment(
                "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=utf-8''inv%E2%80%AEfdp.scr",
                b"x",
            ),
            &["BANNED_BIDI", "BANNED_EXT"],
        ),
        (
            "executable named as a PDF",
            named("report.pdf", "application/pdf", PE),
            &["BANNED_DISGUISED", "BANNED_SNIFFED"],
        ),
        ("declared executable type", named("data.bin", "application/x-msdownload", b"x"), &["BANNED_TYPE"]),
        (
            "script in a zip",
            named("a.zip", "application/zip", &zip(&[Entry::new("docs/readme.js", b"WScript.Echo(1)")])),
            &["BANNED_EXT"],
        ),
        (
            "exe in a zip in a zip",
            named("a.zip", "application/zip", &zip(&[Entry::new("inner.zip", &zip_exe)])),
            &["BANNED_EXT", "BANNED_SNIFFED"],
        ),
        (
            "exe in a tar.gz",
            named("a.tgz", "application/gzip", &gzip("a.tar", &tar(&[("x/run.exe", PE)]))),
            &["BANNED_EXT", "BANNED_SNIFFED"],
        ),
        (
            "exe in a zip in a forwarded message",
            forwarded(&named("a.zip", "application/zip", &zip_exe)),
            &["BANNED_EXT", "BANNED_SNIFFED"],
        ),
        (
            "uuencoded exe",
            b"From: a@b\r\n\r\nbegin 644 run.exe\r\n$35J0`\r\n`\r\nend\r\n".to_vec(),
            &["BANNED_EXT", "BANNED_SNIFFED"],
        ),
        (
            "RFC 2231 continuation hides .exe",
            with_attachment(
                "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*0=\"pho\"; filename*1=\"to.exe\"",
                b"x",
            ),
            &["BANNED_EXT"],
        ),
        (
            "RFC 2047 encoded name",
            with_attachment("Content-Type: application/octet-stream; name=\"=?utf-8?B?cGhvdG8uanBnLmV4ZQ==?=\"", b"x"),
            &["BANNED_DOUBLE_EXT", "BANNED_EXT"],
        ),
        (
            "windows shortcut",
            named("doc.lnk", "application/octet-stream", &[0x4C, 0, 0, 0, 0x01, 0x14, 0x02, 0]),
            &["BANNED_EXT", "BANNED_SNIFFED"],
        ),
        ("iso image", named("invoice.iso", "application/octet-stream", b"x"), &["BANNED_EXT"]),
    ];
    for (what, msg, want) in cases {
        assert_eq!(names(&msg), want.to_vec(), "{what}");
    }
}

#[test]
fn findings_name_the_part_inside_archives() {
    let inner = zip(&[Entry::new("setup.exe", PE)]);
    let f = findings(&named("a.zip", "application/zip", &zip(&[Entry::new("inner.zip", &inner)])));
    assert!(f.contains(&("BANNED_EXT".into(), "2!inner.zip!setup.exe".into())), "{f:?}");
}

#[test]
fn clean_look_alikes_pass() {
    let docx =
        zip(&[Entry::new("[Content_Types].xml", b"<Types/>"), Entry::new("word/document.xml", b"<w:document/>")]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a PDF named .pdf", named("report.pdf", "application/pdf", PDF)),
        (
            "a docx (zip inside)",
            named("letter.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", &docx),
        ),
        (
            "the word .exe in text",
            b"From: a@b\r\nSubject: setup.exe\r\n\r\nrun setup.exe from invoice.pdf.exe\r\n".to_vec(),
        ),
        ("an exe-like word in a name", named("exercise.pdf", "application/pdf", PDF)),
        ("a tar of text", named("notes.tar", "application/x-tar", &tar(&[("a.txt", b"hello")]))),
    ];
    for (what, msg) in cases {
        assert!(findings(&msg).is_empty(), "{what}: {:?}", findings(&msg));
    }
}
