#!/usr/bin/env bash
# Installs the Debian packages the tests need (Postfix for the end-to-end suite, clamd and sigtool
# for the virus scanner tests, iproute2 for `ss`, redis-server for the shared Bayes store). Idempotent: does nothing when they are there.
set -euo pipefail
pkgs=(postfix clamav-daemon clamav iproute2 redis-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# cargo-deb builds the package the test suite installs.
command -v cargo-deb >/dev/null || cargo install --locked --quiet cargo-deb
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
# Postfix must not configure or start a system instance: the tests run their own.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
