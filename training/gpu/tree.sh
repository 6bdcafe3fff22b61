#!/usr/bin/env bash
# What travels to a lent GPU machine is the working tree (tracked files and untracked files git does
# not ignore) plus the carried paths, 64 MiB in all. The evaluation models (about 140 MiB) are not
# needed there, so for the device run they leave the index and are ignored locally:
#   bash training/gpu/tree.sh light      # before `make gpu-pack` and the device run
#   bash training/gpu/tree.sh restore    # right after it, and always before a commit
set -euo pipefail
cd "$(dirname "$0")/../.."
EXCLUDE=.git/info/exclude
LINE=/evaluation/models/
case "${1:-}" in
  light)
    git rm -r -q --cached evaluation/models
    grep -qxF "$LINE" "$EXCLUDE" 2>/dev/null || echo "$LINE" >> "$EXCLUDE"
    echo "evaluation/models left out of what travels; run 'bash training/gpu/tree.sh restore' after the device run" ;;
  restore)
    git reset -q -- evaluation/models
    if [ -f "$EXCLUDE" ]; then grep -vxF "$LINE" "$EXCLUDE" > "$EXCLUDE.tmp" || true; mv "$EXCLUDE.tmp" "$EXCLUDE"; fi
    git status --short evaluation/models
    echo "evaluation/models tracked again" ;;
  *) echo "usage: bash training/gpu/tree.sh light|restore" >&2; exit 2 ;;
esac
