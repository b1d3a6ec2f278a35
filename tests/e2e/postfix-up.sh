#!/usr/bin/env bash
# Starts a private Postfix instance for the end-to-end tests, wired to strainer exactly as
# `strainer postfix-config` tells administrators. It never touches /etc/postfix.
#
#   postfix-up.sh DIR STRAINER_BIN
#
# DIR gets etc/ (config), spool/ (queue), data/, mail/ (virtual Maildirs), maillog.
# Listens on 127.0.0.1:25 (submission for tests) and 127.0.0.1:10026 (re-injection).
set -euo pipefail
dir=$1
bin=$2
conf=$dir/etc

if postfix -c "$conf" status >/dev/null 2>&1; then
  postfix -c "$conf" stop >/dev/null 2>&1 || true
fi
rm -rf "$dir"
mkdir -p "$conf" "$dir/spool" "$dir/data" "$dir/mail"
chown nobody:nogroup "$dir/mail"
chown postfix "$dir/data"

for port in 25 10026; do
  if ss -ltn "( sport = :$port )" | grep -q LISTEN; then
    echo "postfix-up: port $port on this machine is taken; stop what listens there first" >&2
    exit 1
  fi
done

# The wiring strainer prints, split into its main.cf and master.cf halves.
"$bin" postfix-config > "$dir/wiring.txt"
awk '/^# \/etc\/postfix\/master.cf/{m=1} !m' "$dir/wiring.txt" > "$dir/wiring-main.cf"
awk '/^# \/etc\/postfix\/master.cf/{m=1} m' "$dir/wiring.txt" > "$dir/wiring-master.cf"

cat > "$conf/main.cf" <<EOC
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = $dir/maillog
maillog_file_prefixes = /var, /dev/stdout, /tmp, $dir
myhostname = mx.test.example
mydomain = test.example
myorigin = test.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = test.example
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = texthash:$conf/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtputf8_enable = yes
biff = no
# Retry quickly: the tests stop and start strainer.
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
EOC
cat "$dir/wiring-main.cf" >> "$conf/main.cf"

cat > "$conf/master.cf" <<'EOC'
127.0.0.1:smtp inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOC
grep -v '^#' "$dir/wiring-master.cf" >> "$conf/master.cf"

{
  for u in pass queue bulk bounce spam virus other large; do echo "$u@test.example $u/"; done
} > "$conf/vmailbox"

postfix -c "$conf" check
postfix -c "$conf" start
for _ in $(seq 50); do
  if ss -ltn '( sport = :25 )' | grep -q LISTEN && ss -ltn '( sport = :10026 )' | grep -q LISTEN; then
    echo "postfix-up: Postfix $(postconf -c "$conf" -h mail_version) running from $conf"
    exit 0
  fi
  sleep 0.2
done
echo "postfix-up: Postfix did not start; its log:" >&2
cat "$dir/maillog" >&2 || true
exit 1
