#!/usr/bin/env bash
# Time the test suite of two revisions alternately on this machine, in one run (machines are noisy):
#   scripts/suite_time.sh OLD_REV [NEW_REV] [ROUNDS]    (NEW_REV: the working tree; ROUNDS: 3)
# Each line: revision, round, load average before it, pytest's summary, then wall / user / sys seconds.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old" >/dev/null 2>&1; [ -d "$work/new" ] && git -C "$root" worktree remove --force "$work/new" >/dev/null 2>&1; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/old" "$1" >/dev/null 2>&1
[ -d "$root/../shared" ] && ln -s "$(cd "$root/../shared" && pwd)" "$work/shared"  # the fixtures' tests run in both
new=$root
if [ -n "${2:-}" ]; then git -C "$root" worktree add --detach "$work/new" "$2" >/dev/null 2>&1; new=$work/new; fi
for round in $(seq "${3:-3}"); do
  for tree in "$work/old" "$new"; do
    name=$([ "$tree" = "$work/old" ] && echo "$1" || echo "${2:-working tree}")
    load=$(cut -d' ' -f1 /proc/loadavg)
    summary=$(cd "$tree" && PYTHONPATH=$tree /usr/bin/time -f "%e wall %U user %S sys" -o "$work/time" \
      python -m pytest -q -p no:cacheprovider 2>&1 | tail -1)
    echo "$name round $round load $load: $summary | $(cat "$work/time")"
  done
done
