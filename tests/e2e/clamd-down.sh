#!/usr/bin/env bash
# Stops the clamd started by clamd-up.sh.   clamd-down.sh DIR
dir=$1
[ -f "$dir/clamd.pid" ] && kill "$(cat "$dir/clamd.pid")" 2>/dev/null
for _ in $(seq 50); do ss -ltn '( sport = :3310 )' | grep -q LISTEN || exit 0; sleep 0.1; done
exit 0
