#!/usr/bin/env bash
# Pass-through throughput: Postfix's smtp-source -> strainer -> smtp-sink, next to
# smtp-source -> smtp-sink (the ceiling of this harness). Loopback only; needs the postfix package
# (smtp-source, smtp-sink) and a release build. Prints messages/s per run and the median.
#
#   benches/passthrough.sh [MESSAGES] [SESSIONS] [RUNS] [SIZE_BYTES]
# STRAINER_MAX_IDLE sets relay.max_idle (0: a new downstream connection per message).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}; c=${2:-10}; runs=${3:-5}; size=${4:-2000}
sink_port=12526; filter_port=12525
cargo build --release --locked --bin strainer -q
work=$(mktemp -d)
cat > "$work/strainer.toml" <<EOC
[server]
listen = "127.0.0.1:$filter_port"
max_sessions = 100
[relay]
address = "127.0.0.1:$sink_port"
max_idle = ${STRAINER_MAX_IDLE:-8}
EOC
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
smtp-sink -u nobody -c "127.0.0.1:$sink_port" 256 > "$work/sink.out" 2>&1 & pids+=($!)
STRAINER_LOG=warn target/release/strainer serve --config "$work/strainer.toml" 2> "$work/strainer.log" & pids+=($!)
sleep 1

measure() { # addr -> messages/s
  local t0 t1
  t0=$(date +%s.%N)
  smtp-source -s "$c" -m "$n" -l "$size" -f bench@test.example -t sink@test.example "$1" >/dev/null
  t1=$(date +%s.%N)
  echo "$n / ($t1 - $t0)" | bc -l
}
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f", m}'; }

for target in "direct 127.0.0.1:$sink_port" "strainer 127.0.0.1:$filter_port"; do
  set -- $target
  : > "$work/$1.runs"
  for _ in $(seq "$runs"); do measure "$2" >> "$work/$1.runs"; done
  printf '%-9s %s messages x %s bytes, %s sessions, %s runs: %s msg/s (runs: %s)\n' "$1" "$n" "$size" "$c" "$runs" \
    "$(median < "$work/$1.runs")" "$(awk '{printf "%.0f ", $1}' "$work/$1.runs")"
done
