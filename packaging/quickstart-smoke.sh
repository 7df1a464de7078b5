#!/usr/bin/env bash
# CI smoke test of the README's first command: runs packaging/quickstart.sh, executes the curl
# walk-through it prints, checks the record comes back NOTIFIED at the node and reaches central,
# then interrupts it and checks that it stopped central and the node.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${SMOKE_PORT:-17070}"
export CENTRAL_PORT="${SMOKE_CENTRAL_PORT:-17000}" CENTRAL_QUIC_PORT="${SMOKE_CENTRAL_QUIC_PORT:-17001}"
WORK="$(mktemp -d)"
mkfifo "$WORK/out"
NODE_PORT="$PORT" packaging/quickstart.sh > "$WORK/out" 2> "$WORK/err" &
QS_PID=$!
# The walk-through pauses central (kill -STOP) to cut the link: never leave it paused.
trap 'kill -CONT "$(cat demo/central.pid 2>/dev/null)" 2>/dev/null || true; kill -TERM $QS_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
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
for key in node_url central_url client_id client_secret office_id facility_id users REGISTRATION_AGENT LOCAL_REGISTRAR; do
    grep -q "\"$key\"" demo/credentials.json || { echo "credentials.json lacks $key"; exit 1; }
done
bash -e "$WORK/walk.sh" > "$WORK/walk.out"
grep -q '"status":"NOTIFIED"' "$WORK/walk.out" || { echo "walk-through did not find the record NOTIFIED"; cat "$WORK/walk.out"; exit 1; }
grep -q '"type":"READ"' "$WORK/walk.out" || { echo "read-back did not record a READ action"; exit 1; }
# Steps 8-13: people log in at the node with central paused, the draft is declared, validated and
# its registration requested; once central runs again it registers the record with a number, and
# the node shows that number.
grep -q '"customActionType":"VALIDATE_DECLARATION"' "$WORK/walk.out" \
    || { echo "the agent's validation is missing"; cat "$WORK/walk.out"; exit 1; }
grep -q '"type":"REGISTER","transactionId":"[^"]*","status":"Requested"' "$WORK/walk.out" \
    || { echo "the registrar's requested registration is missing"; cat "$WORK/walk.out"; exit 1; }
grep -q '"status":"REGISTERED"' "$WORK/walk.out" \
    || { echo "central never registered the record"; cat "$WORK/walk.out"; exit 1; }
grep -q '"registrationNumber":"[0-9A-Z/-]*"' "$WORK/walk.out" \
    || { echo "the node never showed the registration number"; cat "$WORK/walk.out"; exit 1; }
# Step 14: the misspelt name finds the registered record at central and at the node.
DRAFT_TRACKING="$(sed -n 's/^the record.s tracking id: //p' "$WORK/walk.out")"
[[ -n "$DRAFT_TRACKING" ]] || { echo "step 14 printed no tracking id"; cat "$WORK/walk.out"; exit 1; }
for where in central node; do
    grep -q "^$where finds Chnada Phiri: \"trackingId\":\"$DRAFT_TRACKING\"" "$WORK/walk.out" \
        || { echo "fuzzy search at $where did not find $DRAFT_TRACKING"; cat "$WORK/walk.out"; exit 1; }
done
# Step 6 may run before the entry crossed to central: check central directly until it has it.
TRACKING="$(grep -o '"trackingId":"[0-9A-Z]*"' "$WORK/walk.out" | head -n1 | sed 's/.*:"\(.*\)"/\1/')"
CID="$(grep -o '"client_id": *"[^"]*"' demo/credentials.json | sed 's/.*: *"\(.*\)"/\1/')"
CSECRET="$(grep -o '"client_secret": *"[^"]*"' demo/credentials.json | sed 's/.*: *"\(.*\)"/\1/')"
CTOKEN="$(curl -s -X POST "http://127.0.0.1:$CENTRAL_PORT/auth/token?grant_type=client_credentials&client_id=$CID&client_secret=$CSECRET" \
    | sed 's/.*"access_token":"\([^"]*\)".*/\1/')"
found=0
for _ in $(seq 1 150); do
    if curl -s -X POST "http://127.0.0.1:$CENTRAL_PORT/api/events/events/search" -H "Authorization: Bearer $CTOKEN" \
        -d '{"query":{"type":"and","clauses":[{"trackingId":{"type":"exact","term":"'"$TRACKING"'"}}]}}' | grep -q '"total":1'; then
        found=1; break
    fi
    sleep 0.2
done
[[ $found == 1 ]] || { echo "notification $TRACKING never reached central"; exit 1; }
kill -TERM "$QS_PID"
wait "$QS_PID" || true
if curl -s --max-time 2 "http://127.0.0.1:$PORT/ping" >/dev/null; then
    echo "quickstart left the node running"; exit 1
fi
if curl -s --max-time 2 "http://127.0.0.1:$CENTRAL_PORT/ping" >/dev/null; then
    echo "quickstart left central running"; exit 1
fi
echo "quickstart smoke test passed"
