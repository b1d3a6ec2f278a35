//! File types from magic bytes, whatever the name or declared type says.

use serde::Serialize;

/// A type recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Windows/DOS executable (MZ).
    Pe,
    /// ELF executable or library.
    Elf,
    /// Mach-O executable (or a Java class: same magic).
    Macho,
    /// Windows shortcut.
    Lnk,
    /// Script with a `#!` line.
    Script,
    /// Zip (also docx/xlsx/jar/apk).
    Zip,
    /// gzip.
    Gzip,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
    /// 7-Zip.
    SevenZip,
    /// RAR.
    Rar,
    /// POSIX tar.
    Tar,
    /// Microsoft cabinet.
    Cab,
    /// ISO 9660 image.
    Iso,
    /// PDF.
    Pdf,
    /// OLE compound file (old Office, msi).
    Ole,
    /// PNG, JPEG or GIF image.
    Image,
}

impl Kind {
    /// The lower-case name used in rule files and output.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pe => "pe",
            Kind::Elf => "elf",
            Kind::Macho => "macho",
            Kind::Lnk => "lnk",
            Kind::Script => "script",
            Kind::Zip => "zip",
            Kind::Gzip => "gzip",
            Kind::Bzip2 => "bzip2",
            Kind::Xz => "xz",
            Kind::SevenZip => "7z",
            Kind::Rar => "rar",
            Kind::Tar => "tar",
            Kind::Cab => "cab",
            Kind::Iso => "iso",
            Kind::Pdf => "pdf",
            Kind::Ole => "ole",
            Kind::Image => "image",
        }
    }

    /// Parses a name as written in rule files.
    pub fn from_name(s: &str) -> Option<Kind> {
        ALL.iter().copied().find(|k| k.name().eq_ignore_ascii_case(s))
    }

    /// Native executables: what a lying name is most dangerous for.
    pub fn is_executable(self) -> bool {
        matches!(self, Kind::Pe | Kind::Elf | Kind::Macho | Kind::Lnk)
    }

    /// Containers strainer can list (zip, tar, gzip).
    pub fn is_listable_archive(self) -> bool {
        matches!(self, Kind::Zip | Kind::Tar | Kind::Gzip)
    }

    /// Containers strainer recognises but cannot list.
    pub fn is_opaque_archive(self) -> bool {
        matches!(self, Kind::SevenZip | Kind::Rar | Kind::Cab | Kind::Bzip2 | Kind::Xz | Kind::Iso)
    }
}

const ALL: [Kind; 17] = [
    Kind::Pe,
    Kind::Elf,
    Kind::Macho,
    Kind::Lnk,
    Kind::Script,
    Kind::Zip,
    Kind::Gzip,
    Kind::Bzip2,
    Kind::Xz,
    Kind::SevenZip,
    Kind::Rar,
    Kind::Tar,
    Kind::Cab,
    Kind::Iso,
    Kind::Pdf,
    Kind::Ole,
    Kind::Image,
];

/// How many leading bytes [`sniff`] needs to see everything it can recognise (ISO's marker is
/// at 32769).
pub const SNIFF_LEN: usize = 32774;

/// Recognises `data` by its first bytes.
pub fn sniff(data: &[u8]) -> Option<Kind> {
    let starts = |m: &[u8]| data.starts_with(m);
    let kind = if starts(b"MZ") {
        Kind::Pe
    } else if starts(b"\x7fELF") {
        Kind::Elf
    } else if starts(&[0xFE, 0xED, 0xFA, 0xCE])
        || starts(&[0xFE, 0xED, 0xFA, 0xCF])
        || starts(&[0xCE, 0xFA, 0xED, 0xFE])
        || starts(&[0xCF, 0xFA, 0xED, 0xFE])
        || starts(&[0xCA, 0xFE, 0xBA, 0xBE])
    {
        Kind::Macho
    } else if starts(&[0x4C, 0, 0, 0, 0x01, 0x14, 0x02, 0]) {
        Kind::Lnk
    } else if starts(b"#!") {
        Kind::Script
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"PK\x07\x08") {
        Kind::Zip
    } else if starts(&[0x1F, 0x8B]) {
        Kind::Gzip
    } else if starts(b"BZh") {
        Kind::Bzip2
    } else if starts(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        Kind::Xz
    } else if starts(&[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C]) {
        Kind::SevenZip
    } else if starts(b"Rar!\x1a\x07") {
        Kind::Rar
    } else if starts(b"MSCF") {
        Kind::Cab
    } else if starts(b"%PDF-") {
        Kind::Pdf
    } else if starts(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        Kind::Ole
    } else if starts(b"\x89PNG") || starts(&[0xFF, 0xD8, 0xFF]) || starts(b"GIF8") {
        Kind::Image
    } else if data.get(257..262) == Some(b"ustar") {
        Kind::Tar
    } else if data.get(32769..32774) == Some(b"CD001") {
        Kind::Iso
    } else {
        return None;
    };
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_common_types() {
        assert_eq!(sniff(b"MZ\x90\x00"), Some(Kind::Pe));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(Kind::Pdf));
        assert_eq!(sniff(b"PK\x03\x04rest"), Some(Kind::Zip));
        assert_eq!(sniff(b"hello"), None);
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Some(Kind::Tar));
        for k in ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }
}
