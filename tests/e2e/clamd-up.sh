#!/usr/bin/env bash
# Starts a private clamd on 127.0.0.1:3310 with a signature database written here (no download):
# the EICAR test file's MD5 (.hdb) and its bytes as a body signature (.ndb), so EICAR is found
# whole or embedded.   clamd-up.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir/db"
if [ -f "$dir/clamd.pid" ] && kill -0 "$(cat "$dir/clamd.pid")" 2>/dev/null; then
  kill "$(cat "$dir/clamd.pid")" || true
  sleep 1
fi
if ss -ltn '( sport = :3310 )' | grep -q LISTEN; then
  echo "clamd-up: port 3310 on this machine is taken; stop what listens there first" >&2
  exit 1
fi
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' > "$dir/eicar.com"
(cd "$dir" && sigtool --md5 eicar.com) | sed 's/:eicar.com$/:Eicar-Test-Signature/' > "$dir/db/test.hdb"
printf 'Eicar-Test-Signature:0:*:%s\n' "$(od -An -tx1 -v "$dir/eicar.com" | tr -d ' \n')" > "$dir/db/test.ndb"
cat > "$dir/clamd.conf" <<EOC
TCPSocket 3310
TCPAddr 127.0.0.1
DatabaseDirectory $dir/db
PidFile $dir/clamd.pid
LogFile $dir/clamd.log
LogTime yes
Foreground no
MaxThreads 4
StreamMaxLength 25M
User root
EOC
clamd -c "$dir/clamd.conf"
for _ in $(seq 100); do
  if printf 'zPING\0' | timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/3310; cat >&3; head -c 4 <&3' 2>/dev/null | grep -q PONG; then
    echo "clamd-up: $(clamd -V) answering on 127.0.0.1:3310"
    exit 0
  fi
  sleep 0.2
done
echo "clamd-up: clamd did not start; its log:" >&2
cat "$dir/clamd.log" >&2 || true
exit 1
