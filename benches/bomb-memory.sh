#!/usr/bin/env bash
# Peak memory of `strainer scan` on each bomb shape, against a small clean message (the idle
# baseline). Target: under 64 MiB above the baseline for every bomb. Needs python3 and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin strainer -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import base64, gzip, io, sys, zipfile, zlib
d = sys.argv[1]
def msg(name, ctype, data):
    b = base64.encodebytes(data).decode().replace("\n", "\r\n")
    return (f'From: a@example.org\r\nSubject: {name}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="X"\r\n\r\n'
            f'--X\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--X\r\nContent-Type: {ctype}; name="{name}"\r\n'
            f'Content-Transfer-Encoding: base64\r\n\r\n{b}\r\n--X--\r\n').encode()
open(f"{d}/clean.eml", "wb").write(b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
one = gzip.compress(b"\0" * (1 << 20), 9)
open(f"{d}/gzip-1gib-zeros.eml", "wb").write(msg("zeros.gz", "application/gzip", one * 1024))
z = io.BytesIO()
with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as f:
    for i in range(30000):
        f.writestr(f"f{i}.txt", b"x")
open(f"{d}/zip-30000-members.eml", "wb").write(msg("many.zip", "application/zip", z.getvalue()))
z = io.BytesIO()
with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
    f.writestr("a.txt", b"\0" * (100 << 20))
raw = z.getvalue()
# Repeat the central directory entry so 200 entries share one compressed stream (overlap bomb).
eocd = raw.rindex(b"PK\x05\x06"); cd = int.from_bytes(raw[eocd+16:eocd+20], "little")
rec = raw[cd:eocd]; n = 200
over = raw[:cd] + rec * n + b"PK\x05\x06" + b"\0"*4 + n.to_bytes(2,"little")*2 + (len(rec)*n).to_bytes(4,"little") + cd.to_bytes(4,"little") + b"\0\0"
open(f"{d}/zip-overlapping.eml", "wb").write(msg("over.zip", "application/zip", over))
nested = b"From: a@b\r\nSubject: bottom\r\n\r\nbottom\r\n"
parts = []
s = ""
for i in range(5000):
    s += f'From: c@example.org\r\nSubject: Fwd {i}\r\nContent-Type: multipart/mixed; boundary="F{i}"\r\n\r\n--F{i}\r\nContent-Type: message/rfc822\r\n\r\n'
s += "From: a@b\r\n\r\nbottom\r\n" + "".join(f"\r\n--F{i}--\r\n" for i in reversed(range(5000)))
open(f"{d}/nested-5000-forwards.eml", "wb").write(s.encode())
s = "From: a@b\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(10000))
s += "Content-Type: text/plain\r\n\r\nbottom\r\n" + "".join(f"--b{i}--\r\n" for i in reversed(range(10000)))
open(f"{d}/multipart-10000-deep.eml", "wb").write(s.encode())
s = 'From: a@b\r\nSubject: many\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="P"\r\n\r\n' + "".join(f"--P\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(20000)) + "--P--\r\n"
open(f"{d}/parts-20000.eml", "wb").write(s.encode())
hdr = "From: a@b\r\nSubject: " + "x" * (8 << 20) + "\r\n\r\nbody\r\n"
open(f"{d}/header-8mib.eml", "wb").write(hdr.encode())
PY
rss() { /usr/bin/time -f %M target/release/strainer scan "$1" >/dev/null 2>"$work/time" || true; tail -n 1 "$work/time"; }
base=$(rss "$work/clean.eml")
printf '%-28s %10s %12s %s\n' fixture "peak KiB" "above idle" findings
printf '%-28s %10s %12s\n' clean.eml "$base" 0
for f in "$work"/*.eml; do
  n=$(basename "$f")
  [ "$n" = clean.eml ] && continue
  peak=$(rss "$f")
  found=$(target/release/strainer scan --json "$f" 2>/dev/null | python3 -c 'import json,sys; print(" ".join(sorted({x["name"] for x in json.load(sys.stdin)["findings"]})))' || true)
  printf '%-28s %10s %9s MiB %s\n' "$n" "$peak" "$(( (peak - base) / 1024 ))" "$found"
done
