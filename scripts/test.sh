#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (apt-get), checks
# formatting and lints, runs unit, property and integration tests, then the end-to-end suite
# through a real clamd (127.0.0.1:3310) and a real Postfix started here on loopback (127.0.0.1:25
# and :10026, strainer on :10025), and the Redis Bayes store tests against a redis-server started
# here on 127.0.0.1:6390.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== unit, property and integration tests"
cargo test --workspace --locked

echo "== end-to-end through clamd and Postfix"
cargo build --locked --bin strainer
dir=${STRAINER_E2E_DIR:-/tmp/strainer-e2e}
clamdir=${STRAINER_CLAMD_DIR:-/tmp/strainer-clamd}
redisdir=${STRAINER_REDIS_DIR:-/tmp/strainer-redis}
on_exit() {
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "--- Postfix log ($dir/maillog), last lines"; tail -n 40 "$dir/maillog" 2>/dev/null || true
    echo "--- strainer log, last lines"; tail -n 40 "$dir/strainer.log" 2>/dev/null || true
    echo "--- clamd log, last lines"; tail -n 20 "$clamdir/clamd.log" 2>/dev/null || true
  fi
  tests/e2e/postfix-down.sh "$dir"
  tests/e2e/clamd-down.sh "$clamdir"
  [ -f "$redisdir/redis.pid" ] && kill "$(cat "$redisdir/redis.pid")" 2>/dev/null || true
  exit $rc
}
trap on_exit EXIT
tests/e2e/clamd-up.sh "$clamdir"
mkdir -p "$redisdir"
redis-server --bind 127.0.0.1 --port 6390 --save "" --appendonly no --daemonize yes \
  --dir "$redisdir" --pidfile "$redisdir/redis.pid" --logfile "$redisdir/redis.log"
for _ in $(seq 50); do redis-cli -p 6390 ping >/dev/null 2>&1 && break; sleep 0.1; done
STRAINER_REDIS=redis://127.0.0.1:6390/ cargo test --locked -p strainer-bayes --test store -- --ignored
STRAINER_CLAMD=127.0.0.1:3310 cargo test --locked --test integration -- --ignored
tests/e2e/postfix-up.sh "$dir" "$PWD/target/debug/strainer"
STRAINER_E2E_DIR=$dir STRAINER_CLAMD_DIR=$clamdir cargo test --locked --test e2e -- --ignored --test-threads=1

echo "== Debian package"
tests/e2e/package.sh "$dir"
