#!/usr/bin/env bash
# Stops the private Postfix instance started by postfix-up.sh.
dir=$1
postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
