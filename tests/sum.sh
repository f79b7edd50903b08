#!/usr/bin/env bash
# tests/sum.sh LOG... — add up the last `N passed, N failed[, N skipped]` line of each log
# and print the total in the same format (make test-full: ASan run + TSan run). A log
# without a summary line counts as one failure.
set -u
p=0 f=0 s=0
for log in "$@"; do
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$log" 2>/dev/null | tail -n 1)
  if [ -z "$line" ]; then f=$((f + 1)); continue; fi
  read -r a b c <<<"$(echo "$line" | sed -E 's/^([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?$/\1 \2 \4/')"
  p=$((p + a)) f=$((f + b)) s=$((s + ${c:-0}))
done
if [ "$s" -gt 0 ]; then echo "$p passed, $f failed, $s skipped"; else echo "$p passed, $f failed"; fi
