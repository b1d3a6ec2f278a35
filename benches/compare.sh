#!/usr/bin/env bash
# Side by side on this machine, on the same messages, between the same driver and sink
# (benches/load.rs, 4 connections): the harness ceiling, strainer with each scanner set, and
# amavisd-new from Debian's package (all checks bypassed, and with SpamAssassin: local rules and
# Bayes trained on the same messages as strainer's). Three repetitions each; prints medians and
# ratios. Installs what it needs (amavisd-new, spamassassin, clamav-daemon) and the corpus.
# Then rspamd from Debian, scanning only (rspamc over HTTP, 64 in parallel: it has no SMTP
# re-injection of its own), Bayes in a private Redis, DNS pointed at a dead local port.
# Not part of CI: it takes 10-20 minutes, most of it amavisd-new with SpamAssassin.
#
#   benches/compare.sh [MESSAGES] [REPETITIONS]      (defaults 5000 and 3; SA_MESSAGES=300)
#   ONLY=rspamd benches/compare.sh                   (one section: ceiling|strainer|amavisd|rspamd)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
REPS=${2:-3}
SA_N=${SA_MESSAGES:-300}
work=${COMPARE_DIR:-/tmp/strainer-compare}
corpus=benches/corpus/package/data
rm -rf "$work"
mkdir -p "$work"

echo "== installing amavisd-new, spamassassin, clamd; fetching the corpus"
scripts/install-deps.sh
for pkg in amavisd-new spamassassin rspamd; do
  if ! dpkg-query -W -f='${Status}' $pkg 2>/dev/null | grep -q "install ok installed"; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkg >/dev/null
  fi
done
ONLY=${ONLY:-}
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
benches/fetch-corpus.sh
cargo build --release --quiet
cargo bench --bench load --no-run --quiet 2>/dev/null
strainer=target/release/strainer

load() { cargo bench --quiet --bench load -- "$@" 2>/dev/null; }

results="$work/results.tsv"
: >"$results"

# run LABEL MESSAGES PID-OR-EMPTY ARGS...: REPS runs, one result line per run.
run() {
  local label=$1 n=$2 pid=$3
  shift 3
  for r in $(seq "$REPS"); do
    local out
    out=$(load --messages "$n" --connections 4 --corpus "$corpus" ${pid:+--pid "$pid"} "$@")
    local rate cpu rss p99
    rate=$(sed -n 's/.*: \([0-9]*\) msg\/s.*/\1/p' <<<"$out")
    p99=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$out")
    cpu=$(sed -n 's/.*(\([0-9.]*\) CPU s per 1000 messages).*/\1/p' <<<"$out")
    rss=$(sed -n 's/.*peak RSS \([0-9]*\) kB.*/\1/p' <<<"$out")
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "${rate:-0}" "${p99:-}" "${cpu:-}" "${rss:-}" >>"$results"
    echo "   $label run $r: ${rate:-?} msg/s, p99 ${p99:-?} ms, ${cpu:-?} CPU s/1000, peak RSS ${rss:-?} kB"
  done
}

wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

if want ceiling; then
echo "== the harness ceiling: driver -> its own sink"
run "driver -> sink (ceiling)" "$N" "" --to 127.0.0.1:12527 --sink 127.0.0.1:12527
fi

# strainer, three scanner sets; Bayes trained on the time split's training part.
if want strainer; then
echo "== strainer"
cat >"$work/base.toml" <<EOF
[server]
listen = "127.0.0.1:12525"
max_sessions = 600
[relay]
address = "127.0.0.1:12526"
[quarantine]
dir = "$work/quarantine"
[bayes]
path = "$work/bayes"
EOF
$strainer train -c "$work/base.toml" --spam $corpus/spam-1 --ham $corpus/easy-ham-1 $corpus/hard-ham-1 | tail -n 5
{ cat "$work/base.toml"; printf '[banned]\nenabled = false\n'; } | sed 's/^\[bayes\]$/[bayes]\nenabled = false/' >"$work/none.toml"
cp "$work/base.toml" "$work/local.toml"
tests/e2e/clamd-up.sh "$work/clamd" >/dev/null
sed 's/^\[bayes\]$/[clamav]\nenabled = true\naddresses = ["127.0.0.1:3310"]\n[bayes]/' "$work/base.toml" >"$work/clamd.toml"
for set in none local clamd; do
  $strainer serve -c "$work/$set.toml" 2>"$work/strainer-$set.log" &
  spid=$!
  wait_port 12525
  case $set in
    none) label="strainer: MIME + policy only" ;;
    local) label="strainer: MIME, banned files, Bayes (clamd off)" ;;
    clamd) label="strainer: MIME, banned files, Bayes + clamd" ;;
  esac
  run "$label" "$N" "$spid" --to 127.0.0.1:12525 --sink 127.0.0.1:12526
  if [ "$set" = clamd ]; then
    cpid=$(cat "$work/clamd/clamd.pid" 2>/dev/null || pgrep -f "clamd.*$work/clamd" | head -n1)
    echo "   clamd pid $cpid CPU s: $(awk '{print ($14+$15)/100}' /proc/"$cpid"/stat 2>/dev/null)" | tee -a "$work/clamd-cpu.txt"
  fi
  kill "$spid"
  wait "$spid" 2>/dev/null || true
done
tests/e2e/clamd-down.sh "$work/clamd" >/dev/null || true
fi

# amavisd-new, configured as its documentation says for Postfix (listen, forward_method), on
# our ports, without syslog, with the checks bypassed or SpamAssassin on.
if want amavisd; then
echo "== amavisd-new"
install -d -o amavis -g amavis "$work/amavis" "$work/amavis/tmp" "$work/amavis/db" "$work/sa"
cp -r /etc/spamassassin/. "$work/sa/"
cat >>"$work/sa/local.cf" <<EOF
use_bayes 1
bayes_auto_learn 0
bayes_path $work/sa/bayes
bayes_file_mode 0666
EOF
echo "   training SpamAssassin's Bayes on the same messages (sa-learn)"
sa-learn --siteconfigpath="$work/sa" --spam $corpus/spam-1 >/dev/null
sa-learn --siteconfigpath="$work/sa" --ham $corpus/easy-ham-1 $corpus/hard-ham-1 >/dev/null
chown -R amavis:amavis "$work/sa"
amavis_conf() {
  cat <<EOF
use strict;
\$MYHOME = '$work/amavis';
\$TEMPBASE = "\$MYHOME/tmp";
\$db_home = "\$MYHOME/db";
\$pid_file = "\$MYHOME/amavisd.pid";
\$lock_file = "\$MYHOME/amavisd.lock";
\$daemon_user = 'amavis';
\$daemon_group = 'amavis';
\$mydomain = 'example.test';
\$myhostname = 'amavis.example.test';
\$inet_socket_bind = '127.0.0.1';
\$inet_socket_port = 12524;
@inet_acl = qw(127.0.0.1);
\$forward_method = 'smtp:[127.0.0.1]:12526';
\$notify_method = \$forward_method;
\$max_servers = 4;
\$enable_db = 0;
\$enable_global_cache = 0;
\$do_syslog = 0;
\$LOGFILE = "\$MYHOME/amavis.log";
\$log_level = 0;
@local_domains_maps = (1);
@bypass_virus_checks_maps = (1);
@bypass_banned_checks_maps = (1);
@bypass_header_checks_maps = (1);
\$sa_local_tests_only = 1;
\$sa_siteconfigpath = '$work/sa';
\$sa_tag_level_deflt = -999;
\$sa_mail_body_size_limit = 400*1024;
EOF
  echo "$1"
  echo "1;"
}
for set in bypassed sa; do
  if [ $set = bypassed ]; then
    amavis_conf '@bypass_spam_checks_maps = (1);' >"$work/amavisd-$set.conf"
    label="amavisd-new 2.13, all checks bypassed"; n=$N
  else
    amavis_conf '@bypass_spam_checks_maps = (0);' >"$work/amavisd-$set.conf"
    label="amavisd-new + SpamAssassin (Bayes, local rules)"; n=$SA_N
  fi
  amavisd -c "$work/amavisd-$set.conf" foreground >"$work/amavisd-$set.out" 2>&1 &
  apid=$!
  wait_port 12524
  run "$label" "$n" "$apid" --to 127.0.0.1:12524 --sink 127.0.0.1:12526
  kill "$apid"
  wait "$apid" 2>/dev/null || true
  sleep 1
done
fi

if want rspamd; then
echo "== rspamd (scan only, over HTTP)"
rs=$work/rspamd
mkdir -p "$rs/local.d" "$rs/db" "$rs/log" "$rs/run"
redis-server --bind 127.0.0.1 --port 6391 --save "" --appendonly no --daemonize yes --dir "$rs" --pidfile "$rs/redis.pid" --logfile "$rs/redis.log"
printf 'dns {\n  nameserver = ["127.0.0.1:5353"];\n  timeout = 0.1s;\n  retransmits = 1;\n}\n' >"$rs/local.d/options.inc"
echo 'servers = "127.0.0.1:6391";' >"$rs/local.d/redis.conf"
printf 'backend = "redis";\nautolearn = false;\n' >"$rs/local.d/classifier-bayes.conf"
printf 'bind_socket = "127.0.0.1:11333";\ncount = 2;\n' >"$rs/local.d/worker-normal.inc"
printf 'bind_socket = "127.0.0.1:11334";\ncount = 1;\n' >"$rs/local.d/worker-controller.inc"
printf 'bind_socket = "127.0.0.1:11332";\n' >"$rs/local.d/worker-proxy.inc"
printf 'type = "file";\nfilename = "%s/log/rspamd.log";\nlevel = "error";\n' "$rs" >"$rs/local.d/logging.inc"
chown -R _rspamd:_rspamd "$rs"
rspamd -f -u _rspamd -g _rspamd --var=LOCAL_CONFDIR="$rs" --var=DBDIR="$rs/db" --var=RUNDIR="$rs/run" --var=LOGDIR="$rs/log" >"$rs/out.log" 2>&1 &
rpid=$!
wait_port 11333
sleep 3
echo "   training rspamd's Bayes on the same messages"
rspamc -h 127.0.0.1:11334 -n 4 learn_spam $corpus/spam-1/*.txt >/dev/null 2>&1 || true
rspamc -h 127.0.0.1:11334 -n 4 learn_ham $corpus/easy-ham-1/*.txt $corpus/hard-ham-1/*.txt >/dev/null 2>&1 || true
find $corpus -name '*.txt' | sort | awk -v n="$N" 'NR <= n' >"$rs/files"
tree_cpu() { local t=0 v; for p in $(pgrep rspamd); do v=$(awk '{print $14+$15}' /proc/"$p"/stat); t=$((t + v)); done; echo $t; }
tree_rss() { local t=0 v; for p in $(pgrep rspamd); do v=$(awk '/VmHWM/{print $2}' /proc/"$p"/status); t=$((t + v)); done; echo $t; }
for r in $(seq "$REPS"); do
  c0=$(tree_cpu); s0=$(date +%s.%N)
  xargs -a "$rs/files" rspamc -h 127.0.0.1:11333 -n 64 symbols >"$rs/scan.log" 2>&1 || true
  s1=$(date +%s.%N); c1=$(tree_cpu)
  n=$(grep -c '^Action:' "$rs/scan.log" || true)
  rate=$(echo "$n / ($s1 - $s0)" | bc)
  cpu=$(echo "scale=2; ($c1 - $c0) * 10 / $n" | bc)
  printf '%s\t%s\t%s\t%s\t%s\n' "rspamd 3.4, scan only over HTTP (rspamc -n 64)" "$rate" "" "$cpu" "$(tree_rss)" >>"$results"
  echo "   rspamd run $r: $n scanned, $rate msg/s, $cpu CPU s/1000"
done
kill "$rpid" 2>/dev/null || true
wait "$rpid" 2>/dev/null || true
kill "$(cat "$rs/redis.pid")" 2>/dev/null || true
fi

echo
echo "== medians of $REPS runs ($N messages; amavisd-new + SpamAssassin: $SA_N)"
python3 - "$results" <<'EOF'
import sys, statistics, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, rate, p99, cpu, rss = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    rows.setdefault(label, []).append((float(rate or 0), p99, cpu, rss))
med = {k: statistics.median(r[0] for r in v) for k, v in rows.items()}
ref = next((v for k, v in med.items() if k.startswith("amavisd-new 2.13")), None)
print("| system | messages/s | p99 ms | CPU s per 1000 msgs | peak RSS MiB | x amavisd-new bypassed |")
print("|---|---|---|---|---|---|")
for k, v in rows.items():
    runs = sorted(v, key=lambda r: r[0])
    mid = runs[len(runs) // 2]
    rss = f"{int(mid[3]) / 1024:.0f}" if mid[3] else "—"
    ratio = (f"{med[k] / ref:.0f}x" if med[k] >= 10 * ref else f"{med[k] / ref:.2f}x") if ref else ""
    print(f"| {k} | {med[k]:.0f} | {mid[1] or '—'} | {mid[2] or '—'} | {rss} | {ratio} |")
EOF
