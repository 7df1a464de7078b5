#!/usr/bin/env bash
# Quick start: builds central and the clinic node, starts both on 127.0.0.1 with demo data, enrolls
# the node with central, writes demo/credentials.json, prints a curl walk-through, and stops
# everything it started on Ctrl-C.
#
#   packaging/quickstart.sh                    # central on :7000 (QUIC :7001), node on :7070
#   NODE_PORT=7171 CENTRAL_PORT=7100 CENTRAL_QUIC_PORT=7101 packaging/quickstart.sh
#
# The demo data (databases, keys, certificates, credentials) lives in demo/ (git-ignored) and is
# reused by the next run; delete demo/ to start afresh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NODE_PORT="${NODE_PORT:-7070}"
CENTRAL_PORT="${CENTRAL_PORT:-7000}"
CENTRAL_QUIC_PORT="${CENTRAL_QUIC_PORT:-7001}"
DEMO="$ROOT/demo"
NODE_DATA="$DEMO/node"
CENTRAL_DATA="$DEMO/central"
NODE_URL="http://127.0.0.1:${NODE_PORT}"
CENTRAL_URL="http://127.0.0.1:${CENTRAL_PORT}"
CENTRAL_QUIC="127.0.0.1:${CENTRAL_QUIC_PORT}"
OFFICE_ID="7b8d2f30-0002-4000-8000-000000000001"   # Ibombo District Office (demo locations)
FACILITY_ID="7b8d2f30-0002-4000-8000-000000000011" # Ibombo District Hospital (demo locations)

echo "==> building crvs-central and crvs-node (release; the first build takes a few minutes)" >&2
cargo build --release --locked -p crvs-central -p crvs-node --bin crvs-central --bin crvs-node >&2
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
NODE="$TARGET/crvs-node"
CENTRAL=("$TARGET/crvs-central" --data-dir "$CENTRAL_DATA"
         --public-quic-addr "$CENTRAL_QUIC" --public-http-url "$CENTRAL_URL")

mkdir -p "$DEMO"
json_field() { # json_field FILE KEY: the string value of "KEY": "..." in our own JSON output
    grep -o "\"$2\": *\"[^\"]*\"" "$1" | head -n1 | sed 's/.*: *"\(.*\)"/\1/'
}

# Central: keys, CA, demo locations, and the demo health facility's system client.
"${CENTRAL[@]}" init --demo-locations > "$DEMO/central-init.json"
CREDS="$DEMO/credentials.json"
CLIENT_ID=""
if [[ -f "$CREDS" ]]; then
    CLIENT_ID="$(json_field "$CREDS" client_id)"
    CLIENT_SECRET="$(json_field "$CREDS" client_secret)"
    if ! "${CENTRAL[@]}" client list | grep "\"$CLIENT_ID\"" > /dev/null; then
        CLIENT_ID=""
    fi
fi
if [[ -z "$CLIENT_ID" ]]; then
    "${CENTRAL[@]}" client add --name "Demo health facility" --health > "$DEMO/client.json"
    CLIENT_ID="$(json_field "$DEMO/client.json" clientId)"
    CLIENT_SECRET="$(json_field "$DEMO/client.json" clientSecret)"
    rm -f "$DEMO/client.json"
fi

# Demo people, made at central (their password hashes sync down to the node, so they log in there
# offline too): a registration agent and a registrar of the Ibombo District Office. Each run gives
# them a fresh password, written to credentials.json.
demo_user() { # demo_user USERNAME FIRSTNAME SURNAME ROLE: prints the user's password
    local out="$DEMO/user.json"
    # The list goes to a file first: `grep -q` stops reading at the first match, and with
    # pipefail the listing's broken pipe would read as "no such user".
    "${CENTRAL[@]}" user list > "$out"
    if grep -q "\"$1\"" "$out"; then
        "${CENTRAL[@]}" user set-password "$1" > "$out"
    else
        "${CENTRAL[@]}" user add --username "$1" --firstname "$2" --surname "$3" --role "$4" \
            --office "$OFFICE_ID" --mobile "+260911000000" > "$out"
    fi
    json_field "$out" password
    rm -f "$out"
}
AGENT_USER="f.katongo"
AGENT_PASSWORD="$(demo_user "$AGENT_USER" Felix Katongo REGISTRATION_AGENT)"
REGISTRAR_USER="k.mweene"
REGISTRAR_PASSWORD="$(demo_user "$REGISTRAR_USER" Kennedy Mweene LOCAL_REGISTRAR)"
# Those changes are entries of central's log up to this seq; the node has them (a re-run's new
# passwords included) once its downstream cursor reaches it.
USERS_SEQ="$("${CENTRAL[@]}" status | grep -o '"centralLogSeq": *[0-9]*' | head -n1 | grep -o '[0-9]*$')"

# Node: keys and database, then enrollment with central (the node's key never leaves it).
"$NODE" --data-dir "$NODE_DATA" init --demo-locations > "$DEMO/node-init.json"
if [[ ! -f "$NODE_DATA/enrollment.json" ]]; then
    NODE_ID="$(json_field "$DEMO/node-init.json" nodeId)"
    "${CENTRAL[@]}" node enroll --node-id "$NODE_ID" --location "$FACILITY_ID" \
        --name "Ibombo District Hospital" --out "$DEMO/bundle.json" > /dev/null
    "$NODE" --data-dir "$NODE_DATA" enroll --bundle "$DEMO/bundle.json" > /dev/null
fi

# Demo mode for people's logins: no SMS or email transport, the second factor is 000000 (as
# OpenCRVS with two-factor authentication off). A real node sets `notification_command`.
cat > "$DEMO/node.toml" <<TOML
# crvs-node configuration written by packaging/quickstart.sh (demo).
two_factor = false
TOML
cat > "$DEMO/central.toml" <<TOML
# crvs-central configuration written by packaging/quickstart.sh (demo): logins at central take
# the code 000000 and invitations are not sent.
two_factor = false
TOML

umask 077
cat > "$CREDS" <<JSON
{
  "node_url": "$NODE_URL",
  "central_url": "$CENTRAL_URL",
  "client_id": "$CLIENT_ID",
  "client_secret": "$CLIENT_SECRET",
  "office_id": "$OFFICE_ID",
  "facility_id": "$FACILITY_ID",
  "users": [
    {"username": "$AGENT_USER", "password": "$AGENT_PASSWORD", "role": "REGISTRATION_AGENT"},
    {"username": "$REGISTRAR_USER", "password": "$REGISTRAR_PASSWORD", "role": "LOCAL_REGISTRAR"}
  ]
}
JSON

PIDS=()
FIFOS=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -f "${FIFOS[@]}"
    echo "==> stopped" >&2
}
trap cleanup INT TERM EXIT

# start NAME LOGFILE CMD...: runs CMD, waits for its first stdout line (where it listens).
start() {
    local name="$1" log="$2"; shift 2
    local fifo; fifo="$(mktemp -u)"; mkfifo "$fifo"; FIFOS+=("$fifo")
    "$@" > "$fifo" 2> "$log" &
    PIDS+=("$!")
    local fd
    exec {fd}< "$fifo"
    local line
    if ! read -r line <&"$fd"; then
        echo "$name failed to start; see $log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    echo "==> $name up: $line" >&2
}
start central "$DEMO/central.log" "${CENTRAL[@]}" --config "$DEMO/central.toml" --http-listen "127.0.0.1:${CENTRAL_PORT}" \
    --quic-listen "$CENTRAL_QUIC" run
echo "${PIDS[0]}" > "$DEMO/central.pid"
start node "$DEMO/node.log" "$NODE" --config "$DEMO/node.toml" --data-dir "$NODE_DATA" \
    --listen "127.0.0.1:${NODE_PORT}" run

# The first sync brings the node its tracking-id lease, the demo client and the demo people
# (created at central).
for _ in $(seq 1 300); do
    if curl -s -X POST "$NODE_URL/auth/token?grant_type=client_credentials&client_id=$CLIENT_ID&client_secret=$CLIENT_SECRET" \
        | grep -q access_token \
        && curl -s "$NODE_URL/api/sync/status" | grep -q '"poolFree":[1-9]'; then
        DOWN="$(curl -s "$NODE_URL/api/sync/status" | grep -o '"downCursor":[0-9]*' | grep -o '[0-9]*$')"
        if [[ "${DOWN:-0}" -ge "${USERS_SEQ:-0}" ]]; then
            break
        fi
    fi
    sleep 0.1
done
echo "==> node enrolled and in sync (logs: demo/central.log, demo/node.log; credentials: demo/credentials.json)" >&2

cat <<WALK

Walk-through (copy and paste in another terminal):

  # 1. Token at the clinic node (OAuth2 client credentials, as OpenCRVS does)
  TOKEN=\$(curl -s -X POST "$NODE_URL/auth/token?grant_type=client_credentials&client_id=$CLIENT_ID&client_secret=$CLIENT_SECRET" \\
          | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')

  # 2. Find the office and the hospital by name
  curl -s -H "Authorization: Bearer \$TOKEN" "$NODE_URL/api/events/locations?locationType=CRVS_OFFICE"

  # 3. Create a birth event at the node (works with the link down too)
  EVENT=\$(curl -s -X POST "$NODE_URL/api/events/events" -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
          -d '{"type":"birth","transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'","createdAtLocation":"$OFFICE_ID"}')
  EVENT_ID=\$(echo "\$EVENT" | sed 's/^{"id":"\\([^"]*\\)".*/\\1/'); echo "\$EVENT"

  # 4. Notify (an incomplete declaration from the facility's health system)
  curl -s -X POST "$NODE_URL/api/events/events/\$EVENT_ID/notify" -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'","type":"NOTIFY","createdAtLocation":"$OFFICE_ID",
            "declaration":{"child.name":{"firstname":"Liam","surname":"Banda"},"child.gender":"male","child.dob":"2024-06-03",
                           "child.placeOfBirth":"HEALTH_FACILITY","child.birthLocation":"$FACILITY_ID",
                           "informant.relation":"MOTHER","mother.name":{"firstname":"Grace","surname":"Banda"}},"annotation":{}}'

  # 5. Read it back at the node, and search by its tracking id
  curl -s -H "Authorization: Bearer \$TOKEN" "$NODE_URL/api/events/events/\$EVENT_ID"
  TRACKING=\$(echo "\$EVENT" | sed 's/.*"trackingId":"\\([^"]*\\)".*/\\1/')
  curl -s -X POST "$NODE_URL/api/events/events/search" -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' \\
       -d '{"query":{"type":"and","clauses":[{"trackingId":{"type":"exact","term":"'\$TRACKING'"}}]}}'

  # 6. The notification has travelled to central (over QUIC, signed): same client, central's token
  CTOKEN=\$(curl -s -X POST "$CENTRAL_URL/auth/token?grant_type=client_credentials&client_id=$CLIENT_ID&client_secret=$CLIENT_SECRET" \\
          | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')
  curl -s -X POST "$CENTRAL_URL/api/events/events/search" -H "Authorization: Bearer \$CTOKEN" -H 'Content-Type: application/json' \\
       -d '{"query":{"type":"and","clauses":[{"trackingId":{"type":"exact","term":"'\$TRACKING'"}}]}}'

  # 7. Ops: the node's backlog, and every node as central sees it
  curl -s "$NODE_URL/api/sync/status"; echo; curl -s "$CENTRAL_URL/api/sync/status"

  # 8. Cut the link: pause central. People keep working at the node.
  kill -STOP \$(cat demo/central.pid)

  # 9. The registration agent logs in at the node (password, then the code: 000000 in demo mode)
  NONCE=\$(curl -s -X POST "$NODE_URL/auth/authenticate" -H 'Content-Type: application/json' \
          -d '{"username":"$AGENT_USER","password":"$AGENT_PASSWORD"}' | sed 's/.*"nonce":"\([^"]*\)".*/\1/')
  AGENT=\$(curl -s -X POST "$NODE_URL/auth/verifyCode" -H 'Content-Type: application/json' \
          -d '{"nonce":"'\$NONCE'","code":"000000"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')

  # 10. A draft (created assigned to the agent), declared complete, then validated
  DRAFT=\$(curl -s -X POST "$NODE_URL/api/events/events" -H "Authorization: Bearer \$AGENT" -H 'Content-Type: application/json' \
          -d '{"type":"birth","transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'"}')
  DRAFT_ID=\$(echo "\$DRAFT" | sed 's/^{"id":"\([^"]*\)".*/\1/')
  DRAFT_TRACKING=\$(echo "\$DRAFT" | sed 's/.*"trackingId":"\([^"]*\)".*/\1/')
  curl -s -X POST "$NODE_URL/api/events/events/\$DRAFT_ID/declare" -H "Authorization: Bearer \$AGENT" -H 'Content-Type: application/json' \
       -d '{"transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'","keepAssignment":true,
            "declaration":{"child.name":{"firstname":"Chanda","surname":"Phiri"},"child.gender":"female","child.dob":"2024-07-14",
                           "child.placeOfBirth":"HEALTH_FACILITY","child.birthLocation":"$FACILITY_ID",
                           "informant.relation":"MOTHER","informant.email":"mary.phiri@example.com",
                           "mother.name":{"firstname":"Mary","surname":"Phiri"}}}'
  curl -s -X POST "$NODE_URL/api/events/events/\$DRAFT_ID/validate" -H "Authorization: Bearer \$AGENT" -H 'Content-Type: application/json' \
       -d '{"transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'"}'

  # 11. The registrar logs in, takes the record (assign) and asks for registration: at a node that is
  #     a Requested REGISTER (flag register:requested); central gives the registration number
  NONCE=\$(curl -s -X POST "$NODE_URL/auth/authenticate" -H 'Content-Type: application/json' \
          -d '{"username":"$REGISTRAR_USER","password":"$REGISTRAR_PASSWORD"}' | sed 's/.*"nonce":"\([^"]*\)".*/\1/')
  REGISTRAR=\$(curl -s -X POST "$NODE_URL/auth/verifyCode" -H 'Content-Type: application/json' \
          -d '{"nonce":"'\$NONCE'","code":"000000"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  curl -s -X POST "$NODE_URL/api/events/events/\$DRAFT_ID/assign" -H "Authorization: Bearer \$REGISTRAR" -H 'Content-Type: application/json' \
       -d '{"transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'"}'
  curl -s -X POST "$NODE_URL/api/events/events/\$DRAFT_ID/register" -H "Authorization: Bearer \$REGISTRAR" -H 'Content-Type: application/json' \
       -d '{"transactionId":"'\$(cat /proc/sys/kernel/random/uuid)'"}'
  curl -s "$NODE_URL/api/sync/status"; echo    # the backlog waits for the link

  # 12. The link is back: the node's backlog drains and central registers the record, giving it
  #     its registration number (the loop asks again each second, for at most two minutes)
  kill -CONT \$(cat demo/central.pid)
  for i in \$(seq 120); do
    FOUND=\$(curl -s -X POST "$CENTRAL_URL/api/events/events/search" -H "Authorization: Bearer \$CTOKEN" -H 'Content-Type: application/json' \\
           -d '{"query":{"type":"and","clauses":[{"trackingId":{"type":"exact","term":"'\$DRAFT_TRACKING'"}}]}}')
    case "\$FOUND" in *'"status":"REGISTERED"'*) break ;; esac; sleep 1
  done; echo "\$FOUND"

  # 13. The number flows back: the node shows the Accepted REGISTER with its registrationNumber
  for i in \$(seq 120); do
    AT_NODE=\$(curl -s -X POST "$NODE_URL/api/events/events/search" -H "Authorization: Bearer \$REGISTRAR" -H 'Content-Type: application/json' \\
           -d '{"query":{"type":"and","clauses":[{"trackingId":{"type":"exact","term":"'\$DRAFT_TRACKING'"}}]}}')
    case "\$AT_NODE" in *'"status":"REGISTERED"'*) break ;; esac; sleep 1
  done
  curl -s "$NODE_URL/api/events/events/\$DRAFT_ID" -H "Authorization: Bearer \$REGISTRAR" | grep -o '"registrationNumber":"[^"]*"'

  # 14. National search finds the record by a misspelt name ("Chnada Phiri"): edit distance and a
  #     phonetic key, at central over every record, and at the node (offline too) over its own
  FUZZY='{"query":{"type":"and","clauses":[{"data":{"child.name":{"type":"fuzzy","term":"Chnada Phiri"}}}]}}'
  echo "central finds Chnada Phiri: \$(curl -s -X POST "$CENTRAL_URL/api/events/events/search" -H "Authorization: Bearer \$CTOKEN" \
       -H 'Content-Type: application/json' -d "\$FUZZY" | grep -o '"trackingId":"[^"]*"' | head -n1)"
  echo "node finds Chnada Phiri: \$(curl -s -X POST "$NODE_URL/api/events/events/search" -H "Authorization: Bearer \$REGISTRAR" \
       -H 'Content-Type: application/json' -d "\$FUZZY" | grep -o '"trackingId":"[^"]*"' | head -n1)"
  echo "the record's tracking id: \$DRAFT_TRACKING"

Press Ctrl-C to stop central and the node.
WALK

wait "${PIDS[@]}"
