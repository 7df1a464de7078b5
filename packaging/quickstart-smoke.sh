#!/usr/bin/env bash
# CI smoke test of the README's first command: runs packaging/quickstart.sh, executes the curl
# walk-through it prints, checks the record comes back NOTIFIED, then interrupts it and checks
# that it stopped the node it started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${SMOKE_PORT:-17070}"
WORK="$(mktemp -d)"
mkfifo "$WORK/out"
NODE_PORT="$PORT" packaging/quickstart.sh > "$WORK/out" 2> "$WORK/err" &
QS_PID=$!
trap 'kill -TERM $QS_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
# Collect the walk-through up to its last line (quickstart prints it once the node listens).
exec 3< "$WORK/out"
: > "$WORK/walk.sh"
recording=0
while IFS= read -r line <&3; do
    [[ "$line" == "Press Ctrl-C"* ]] && break
    [[ "$line" == *"# 1. Token"* ]] && recording=1
    if [[ $recording == 1 ]]; then printf '%s\n' "$line" >> "$WORK/walk.sh"; fi
done
grep -q "TOKEN=" "$WORK/walk.sh" || { echo "no walk-through printed"; cat "$WORK/err"; exit 1; }
test -f demo/credentials.json
for key in node_url client_id client_secret office_id facility_id; do
    grep -q "\"$key\"" demo/credentials.json || { echo "credentials.json lacks $key"; exit 1; }
done
bash -e "$WORK/walk.sh" > "$WORK/walk.out"
grep -q '"status":"NOTIFIED"' "$WORK/walk.out" || { echo "walk-through did not find the record NOTIFIED"; cat "$WORK/walk.out"; exit 1; }
grep -q '"type":"READ"' "$WORK/walk.out" || { echo "read-back did not record a READ action"; exit 1; }
kill -TERM "$QS_PID"
wait "$QS_PID" || true
if curl -s --max-time 2 "http://127.0.0.1:$PORT/ping" >/dev/null; then
    echo "quickstart left the node running"; exit 1
fi
echo "quickstart smoke test: 1 passed, 0 failed"
