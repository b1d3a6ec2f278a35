#!/usr/bin/env bash
# Builds the .deb, installs it, starts the service the way its systemd unit does (without
# systemd), and requires `strainer selftest` to pass against the test Postfix and clamd; then
# purges the package.   package.sh POSTFIX_DIR
set -euo pipefail
pdir=$1
cargo deb --locked >/dev/null
deb=$(ls -t target/debian/strainer_*.deb | head -n 1)
dpkg -i "$deb" >/dev/null
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  dpkg --purge strainer >/dev/null 2>&1 || true
}
trap cleanup EXIT
getent passwd strainer >/dev/null || { echo "package: no strainer user" >&2; exit 1; }
[ "$(stat -c '%a %U' /var/lib/strainer/quarantine)" = "700 strainer" ] || { echo "package: quarantine permissions" >&2; exit 1; }
unit=$(ls /lib/systemd/system/strainer.service /usr/lib/systemd/system/strainer.service 2>/dev/null | head -n 1)
grep -q '^NoNewPrivileges=yes' "$unit" && grep -q '^ProtectSystem=strict' "$unit" && grep -q '^PrivateTmp=yes' "$unit"
user=$(sed -n 's/^User=//p' "$unit")
pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
start=$(sed -n 's/^ExecStart=//p' "$unit")
runuser -u "$user" -- $pre
runuser -u "$user" -- $start 2>"$pdir/packaged-strainer.log" &
pid=$!
for _ in $(seq 100); do ss -ltn '( sport = :10025 )' | grep -q LISTEN && break; sleep 0.1; done
/usr/bin/strainer selftest --config /etc/strainer/strainer.toml --postfix-config-dir "$pdir/etc"
echo "package: $(basename "$deb") installs, starts as user $user from its unit's command, and passes selftest"
