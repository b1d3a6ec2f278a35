#!/usr/bin/env bash
# clamd throughput: strainer's client (benches/clamd.rs) and clamdscan --stream on the same corpus
# against the same clamd, in one run. Needs the corpus (benches/fetch-corpus.sh), clamdscan, and a
# clamd: by default the test one from tests/e2e/clamd-up.sh on 127.0.0.1:3310 (a tiny signature
# database: these figures are protocol and client cost, not signature matching).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${STRAINER_CLAMD_DIR:-/tmp/strainer-clamd}
tests/e2e/clamd-up.sh "$dir" >/dev/null
STRAINER_CLAMD=127.0.0.1:3310 cargo bench --locked --bench clamd 2>/dev/null | grep '^clamd'
printf 'TCPSocket 3310\nTCPAddr 127.0.0.1\n' > "$dir/clamdscan.conf"
mapfile -t files < <(find benches/corpus/package/data -name '*.txt' | sort)
start=$(date +%s.%N)
clamdscan --config-file="$dir/clamdscan.conf" --stream --no-summary --quiet "${files[@]}" || true
end=$(date +%s.%N)
echo "clamdscan --stream, 1 at a time: ${#files[@]} messages in $(echo "$end - $start" | bc -l | cut -c1-5) s = $(echo "${#files[@]} / ($end - $start)" | bc -l | cut -d. -f1) msg/s"
