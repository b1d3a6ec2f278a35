#!/usr/bin/env bash
# strainer's CPU per message against clamd's, with clamd loaded with a synthetic signature set
# of production size (this machine cannot download ClamAV's): random MD5 file hashes (.hdb) and
# random 20-byte body signatures (.ndb), plus EICAR. It is a proxy: real signatures also drive
# bytecode, unpackers and file-type parsers that random ones never trigger, so a production
# clamd costs more per message than this, not less.
#
#   benches/clamd-ratio.sh [HASH_SIGS] [BODY_SIGS] [MESSAGES]      (defaults 1000000 100000 5000)
#
# Needs clamav-daemon (scripts/install-deps.sh) and the corpus (benches/fetch-corpus.sh). Uses
# 127.0.0.1:12525 (strainer), :12526 (the load tool's sink) and :3312 (clamd). Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
HASHES=${1:-1000000}
BODIES=${2:-100000}
N=${3:-5000}
work=${CLAMD_RATIO_DIR:-/tmp/strainer-clamd-ratio}
corpus=benches/corpus/package/data
rm -rf "$work"
mkdir -p "$work/db"
benches/fetch-corpus.sh >/dev/null
cargo build --release --quiet
cargo bench --bench load --no-run --quiet 2>/dev/null

echo "== synthetic signatures: $HASHES file hashes, $BODIES body signatures"
python3 - "$work/db" "$HASHES" "$BODIES" <<'EOF'
import os, random, sys
db, hashes, bodies = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(7)
with open(os.path.join(db, "synthetic.hdb"), "w") as f:
    for i in range(hashes):
        f.write("%032x:%d:Synthetic.Hash-%d\n" % (rnd.getrandbits(128), rnd.randint(1000, 500000), i))
with open(os.path.join(db, "synthetic.ndb"), "w") as f:
    for i in range(bodies):
        f.write("Synthetic.Body-%d:0:*:%040x\n" % (i, rnd.getrandbits(160)))
EOF
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' > "$work/eicar.com"
(cd "$work" && sigtool --md5 eicar.com) | sed 's/:eicar.com$/:Eicar-Test-Signature/' > "$work/db/test.hdb"
cat > "$work/clamd.conf" <<EOC
TCPSocket 3312
TCPAddr 127.0.0.1
DatabaseDirectory $work/db
PidFile $work/clamd.pid
LogFile $work/clamd.log
Foreground no
MaxThreads 4
StreamMaxLength 25M
User root
EOC
clamd -c "$work/clamd.conf"
for _ in $(seq 600); do
  printf 'zPING\0' | timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/3312; cat >&3; head -c 4 <&3' 2>/dev/null | grep -q PONG && break
  sleep 0.5
done
cpid=$(cat "$work/clamd.pid")
trap 'kill "$cpid" 2>/dev/null || true' EXIT
echo "   clamd up, RSS $(awk '/VmRSS/{print $2}' /proc/"$cpid"/status) kB"

cat > "$work/strainer.toml" <<EOF
[server]
listen = "127.0.0.1:12525"
[relay]
address = "127.0.0.1:12526"
[quarantine]
dir = "$work/quarantine"
[clamav]
enabled = true
addresses = ["127.0.0.1:3312"]
[bayes]
enabled = false
EOF
target/release/strainer serve -c "$work/strainer.toml" 2>"$work/strainer.log" &
spid=$!
trap 'kill "$cpid" "$spid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/12525) 2>/dev/null && break; sleep 0.1; done
for run in 0 1 2 3; do
  c0=$(awk '{print $14+$15}' /proc/"$cpid"/stat)
  out=$(cargo bench --quiet --bench load -- --to 127.0.0.1:12525 --sink 127.0.0.1:12526 --messages "$N" \
    --connections 4 --corpus "$corpus" --pid "$spid" 2>/dev/null)
  c1=$(awk '{print $14+$15}' /proc/"$cpid"/stat)
  rate=$(sed -n 's/.*: \([0-9]*\) msg\/s.*/\1/p' <<<"$out")
  ours=$(sed -n 's/.*(\([0-9.]*\) CPU s per 1000 messages).*/\1/p' <<<"$out")
  theirs=$(awk -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN{printf "%.2f", (b-a)/100*1000/n}')
  ratio=$(awk -v o="$ours" -v t="$theirs" 'BEGIN{printf "%.0f", 100*o/t}')
  label="run $run"
  [ "$run" = 0 ] && label="warm-up"
  echo "   $label: $rate msg/s; strainer $ours, clamd $theirs CPU s per 1000 messages: strainer is $ratio% of clamd"
done
