#!/usr/bin/env bash
# Quick start: builds the clinic node, starts it on 127.0.0.1 with demo data, writes
# demo/credentials.json, prints a curl walk-through, and stops everything on Ctrl-C.
#
#   packaging/quickstart.sh            # node on 127.0.0.1:7070
#   NODE_PORT=7171 packaging/quickstart.sh
#
# Stand-alone mode: with no central registry yet, the node fills its own tracking-id pool
# (unique per node only). The demo data (database, keys, credentials) lives in demo/ (git-ignored)
# and is reused by the next run; delete demo/ to start afresh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NODE_PORT="${NODE_PORT:-7070}"
DEMO="$ROOT/demo"
DATA="$DEMO/node"
NODE_URL="http://127.0.0.1:${NODE_PORT}"
OFFICE_ID="7b8d2f30-0002-4000-8000-000000000001"   # Ibombo District Office (demo locations)
FACILITY_ID="7b8d2f30-0002-4000-8000-000000000011" # Ibombo District Hospital (demo locations)

echo "==> building crvs-node (release; the first build takes a few minutes)" >&2
cargo build --release --locked -p crvs-node --bin crvs-node >&2
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/crvs-node"

mkdir -p "$DEMO"
json_field() { # json_field FILE KEY: the string value of "KEY": "..." in our own JSON output
    grep -o "\"$2\": *\"[^\"]*\"" "$1" | head -n1 | sed 's/.*: *"\(.*\)"/\1/'
}

"$BIN" --data-dir "$DATA" init --demo-locations > "$DEMO/init.json"
CREDS="$DEMO/credentials.json"
CLIENT_ID=""
if [[ -f "$CREDS" ]]; then
    CLIENT_ID="$(json_field "$CREDS" client_id)"
    CLIENT_SECRET="$(json_field "$CREDS" client_secret)"
    if ! "$BIN" --data-dir "$DATA" client list | grep "\"$CLIENT_ID\"" > /dev/null; then
        CLIENT_ID=""
    fi
fi
if [[ -z "$CLIENT_ID" ]]; then
    "$BIN" --data-dir "$DATA" client add --name "Demo health facility" --health > "$DEMO/client.json"
    CLIENT_ID="$(json_field "$DEMO/client.json" clientId)"
    CLIENT_SECRET="$(json_field "$DEMO/client.json" clientSecret)"
    rm -f "$DEMO/client.json"
fi
umask 077
cat > "$CREDS" <<JSON
{
  "node_url": "$NODE_URL",
  "client_id": "$CLIENT_ID",
  "client_secret": "$CLIENT_SECRET",
  "office_id": "$OFFICE_ID",
  "facility_id": "$FACILITY_ID"
}
JSON

# Start the node; its first stdout line says where it listens (no polling, no sleeping).
FIFO="$(mktemp -u)"
mkfifo "$FIFO"
"$BIN" --data-dir "$DATA" --listen "127.0.0.1:${NODE_PORT}" run > "$FIFO" 2> "$DEMO/node.log" &
NODE_PID=$!
cleanup() {
    trap - INT TERM EXIT
    if kill -0 "$NODE_PID" 2>/dev/null; then
        kill -TERM "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    rm -f "$FIFO"
    echo "==> stopped" >&2
}
trap cleanup INT TERM EXIT
exec 3< "$FIFO"
if ! read -r LISTENING <&3; then
    echo "node failed to start; see $DEMO/node.log:" >&2
    tail -n 20 "$DEMO/node.log" >&2
    exit 1
fi
echo "==> node up: $LISTENING (logs: demo/node.log, credentials: demo/credentials.json)" >&2

cat <<WALK

Walk-through (copy and paste in another terminal):

  # 1. Token (OAuth2 client credentials, as OpenCRVS does)
  TOKEN=\$(curl -s -X POST "$NODE_URL/auth/token?grant_type=client_credentials&client_id=$CLIENT_ID&client_secret=$CLIENT_SECRET" \\
          | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')

  # 2. Find the office and the hospital by name
  curl -s -H "Authorization: Bearer \$TOKEN" "$NODE_URL/api/events/locations?locationType=CRVS_OFFICE"

  # 3. Create a birth event
  EVENT=\$(curl -s -X POST "$NODE_URL/api/events/events" -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
          -d '{"type":"birth","transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'","createdAtLocation":"$OFFICE_ID"}')
  EVENT_ID=\$(echo "\$EVENT" | sed 's/^{"id":"\\([^"]*\\)".*/\\1/'); echo "\$EVENT"

  # 4. Notify (an incomplete declaration from the facility's health system)
  curl -s -X POST "$NODE_URL/api/events/events/\$EVENT_ID/notify" -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'","type":"NOTIFY","createdAtLocation":"$OFFICE_ID",
            "declaration":{"child.name":{"firstname":"Liam","surname":"Banda"},"child.gender":"male","child.dob":"2024-06-03",
                           "child.placeOfBirth":"HEALTH_FACILITY","child.birthLocation":"$FACILITY_ID",
                           "informant.relation":"MOTHER","mother.name":{"firstname":"Grace","surname":"Banda"}},"annotation":{}}'

  # 5. Read it back, and search by its tracking id
  curl -s -H "Authorization: Bearer \$TOKEN" "$NODE_URL/api/events/events/\$EVENT_ID"
  TRACKING=\$(echo "\$EVENT" | sed 's/.*"trackingId":"\\([^"]*\\)".*/\\1/')
  curl -s -X POST "$NODE_URL/api/events/events/search" -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"query":{"type":"and","clauses":[{"trackingId":{"type":"exact","term":"'\$TRACKING'"}}]}}'

Press Ctrl-C to stop the node.
WALK

wait "$NODE_PID"
