//! What the MIME view sees in each evasion, bomb and look-alike.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../../tests/fixtures/mod.rs"]
mod fixtures;

use fixtures::*;
use proptest::prelude::*;
use strainer_mime::{Kind, Limits, Origin, View, analyze};

fn view(m: &[u8]) -> View {
    analyze(m, &Limits::default())
}

fn names(v: &View) -> Vec<String> {
    v.parts.iter().flat_map(|p| p.names.clone()).collect()
}

fn has(v: &View, finding: &str) -> bool {
    v.findings.iter().any(|f| f.name == finding)
}

#[test]
fn clean_pdf_has_no_findings() {
    let v = view(&named("report.pdf", "application/pdf", PDF));
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    let pdf = v.parts.iter().find(|p| p.names == ["report.pdf"]).unwrap();
    assert_eq!(pdf.sniffed, Some(Kind::Pdf));
    assert_eq!(pdf.content_type, "application/pdf");
    assert_eq!(pdf.path, "2");
    assert_eq!(pdf.size, PDF.len() as u64);
    let text = v.parts.iter().find(|p| p.path == "1").unwrap();
    assert_eq!(text.text.as_deref().map(str::trim), Some("see attached"));
}

#[test]
fn filename_encodings_are_decoded() {
    // RFC 2231 with charset, RFC 2231 continuations, RFC 2047 in a quoted name.
    let cases = [
        (
            "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*=utf-8''%E2%80%AEfdp.exe",
            "\u{202e}fdp.exe",
        ),
        (
            "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename*0=\"invoice.p\"; filename*1=\"df.exe\"",
            "invoice.pdf.exe",
        ),
        ("Content-Type: application/octet-stream; name=\"=?utf-8?B?cmVjaW8uZXhl?=\"", "recio.exe"),
    ];
    for (headers, want) in cases {
        let v = view(&with_attachment(headers, PE));
        assert!(names(&v).iter().any(|n| n == want), "{headers}: got {:?}", names(&v));
    }
}

#[test]
fn both_names_kept_when_they_differ() {
    let m = with_attachment(
        "Content-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.exe\"",
        PE,
    );
    let v = view(&m);
    let p = v.parts.iter().find(|p| p.path == "2").unwrap();
    assert_eq!(p.names, ["a.exe", "a.pdf"]);
    assert_eq!(p.sniffed, Some(Kind::Pe), "an executable whose name says PDF");
}

#[test]
fn archive_members_are_listed_and_sniffed() {
    let inner = zip(&[Entry::new("setup.exe", PE)]);
    let outer = zip(&[Entry::new("readme.txt", b"hello"), Entry::new("inner.zip", &inner)]);
    let v = view(&named("docs.zip", "application/zip", &outer));
    let exe = v.parts.iter().find(|p| p.names == ["setup.exe"]).unwrap();
    assert_eq!(exe.origin, Origin::Archive);
    assert_eq!(exe.sniffed, Some(Kind::Pe));
    assert_eq!(exe.path, "2!inner.zip!setup.exe");
    assert!(v.findings.is_empty(), "{:?}", v.findings);
}

#[test]
fn tar_gz_members_are_listed() {
    let tgz = gzip("bundle.tar", &tar(&[("bin/run.exe", PE), ("notes.txt", b"hi")]));
    let v = view(&named("bundle.tar.gz", "application/gzip", &tgz));
    let exe = v.parts.iter().find(|p| p.names == ["bin/run.exe"]).unwrap();
    assert_eq!(exe.sniffed, Some(Kind::Pe));
    assert_eq!(exe.path, "2!bundle.tar!bin/run.exe");
}

#[test]
fn zip_inside_a_forwarded_message() {
    let inner = named("x.zip", "application/zip", &zip(&[Entry::new("a.scr", PE)]));
    let v = view(&forwarded(&inner));
    assert!(v.parts.iter().any(|p| p.names == ["a.scr"] && p.sniffed == Some(Kind::Pe)), "{:?}", names(&v));
}

#[test]
fn encrypted_zip_is_flagged() {
    let z = zip(&[Entry { encrypted: true, deflate: false, ..Entry::new("secret.exe", PE) }]);
    let v = view(&named("s.zip", "application/zip", &z));
    assert!(has(&v, "ARCHIVE_ENCRYPTED"));
    assert!(v.parts.iter().any(|p| p.names == ["secret.exe"] && p.encrypted));
}

#[test]
fn uuencoded_executable_in_the_body() {
    let m = b"From: a@b\r\nSubject: uu\r\n\r\nhere\r\nbegin 644 invoice.exe\r\n$35J0`\r\n`\r\nend\r\n";
    let v = view(m);
    let p = v.parts.iter().find(|p| p.origin == Origin::Uuencode).unwrap();
    assert_eq!(p.names, ["invoice.exe"]);
    assert_eq!(p.sniffed, Some(Kind::Pe));
}

#[test]
fn html_is_reduced_to_text() {
    let m = b"From: a@b\r\nContent-Type: text/html\r\n\r\n<html><body><p>Cheap <b>pills</b></p><script>x()</script></body></html>\r\n";
    let v = view(m);
    let t = v.parts[0].text.as_deref().unwrap();
    assert!(t.contains("Cheap") && t.contains("pills") && !t.contains("<b>"), "{t}");
}

#[test]
fn ambiguous_structure_is_a_finding() {
    let dup = with_attachment(
        "Content-Type: application/octet-stream; name=\"a.bin\"\r\nContent-Transfer-Encoding: 7bit",
        PE,
    );
    assert!(has(&view(&dup), "MIME_AMBIGUOUS"), "duplicate Content-Transfer-Encoding");
    let mut open = named("a.pdf", "application/pdf", PDF);
    let cut = open.len() - b"--XX--\r\n".len();
    open.truncate(cut);
    assert!(has(&view(&open), "MIME_UNCLOSED_BOUNDARY"), "missing closing boundary");
    let reused = b"From: a@b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\
Content-Type: multipart/alternative; boundary=\"B1\"\r\n\r\n--B1\r\nContent-Type: text/plain\r\n\r\nx\r\n--B1--\r\n--B--\r\n";
    assert!(has(&view(reused), "MIME_AMBIGUOUS"), "a nested boundary extending the outer one");
    assert!(!has(&view(&deep_multipart(5)), "MIME_AMBIGUOUS"), "distinct nested boundaries are fine");
}

#[test]
fn look_alikes_are_clean() {
    let m = b"From: a@b\r\nSubject: about setup.exe\r\n\r\nPlease do not run setup.exe or invoice.pdf.exe.\r\n";
    let v = view(m);
    assert!(v.findings.is_empty());
    assert!(v.parts.iter().all(|p| p.names.is_empty()));
}

#[test]
fn deep_nesting_is_limited() {
    let v = view(&deep_multipart(200));
    assert!(has(&v, "MIME_LIMIT_DEPTH"), "{:?}", v.findings);
    let v = view(&deep_forward(3000));
    assert!(has(&v, "MIME_LIMIT_DEPTH"), "{:?}", v.findings);
    let v = view(&deep_forward(5));
    assert!(!has(&v, "MIME_LIMIT_DEPTH"), "five forwards are normal: {:?}", v.findings);
}

#[test]
fn twenty_thousand_parts_are_limited() {
    let v = view(&many_parts(20_000));
    assert!(has(&v, "MIME_LIMIT_PARTS"));
    let v = view(&many_parts(300));
    assert!(!has(&v, "MIME_LIMIT_PARTS"));
    assert_eq!(v.parts.len(), 301);
}

#[test]
fn zip_with_thirty_thousand_members_is_limited() {
    let names: Vec<String> = (0..30_000).map(|i| format!("f{i}.txt")).collect();
    let entries: Vec<Entry<'_>> = names.iter().map(|n| Entry { deflate: false, ..Entry::new(n, b"x") }).collect();
    let v = view(&named("many.zip", "application/zip", &zip(&entries)));
    assert!(has(&v, "ARCHIVE_LIMIT_MEMBERS"));
    assert!(v.parts.len() <= Limits::default().max_members + 3);
}

#[test]
fn overlapping_zip_is_a_bomb() {
    let v = view(&named("o.zip", "application/zip", &overlapping_zip(100)));
    assert!(has(&v, "ARCHIVE_BOMB"), "{:?}", v.findings);
}

#[test]
fn gigabyte_of_zeros_is_a_bomb_and_stays_bounded() {
    let bomb = gzip_zeros(1024);
    let v = view(&named("zeros.gz", "application/gzip", &bomb));
    assert!(has(&v, "ARCHIVE_BOMB"), "{:?}", v.findings);
    let decoded: u64 = v.parts.iter().filter_map(|p| p.data.as_ref()).map(|d| d.len() as u64).sum();
    assert!(decoded <= Limits::default().max_decoded_bytes, "decoded {decoded}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = view(&data);
    }

    #[test]
    fn never_panics_on_mutated_messages(seed in 0usize..4, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..20)) {
        let base = match seed {
            0 => named("a.zip", "application/zip", &zip(&[Entry::new("a.exe", PE)])),
            1 => forwarded(&named("b.pdf", "application/pdf", PDF)),
            2 => named("t.tgz", "application/gzip", &gzip("t.tar", &tar(&[("x.exe", PE)]))),
            _ => deep_multipart(5),
        };
        let mut m = base;
        for (at, b) in flips {
            let i = at % m.len();
            m[i] = b;
        }
        let _ = view(&m);
    }
}
