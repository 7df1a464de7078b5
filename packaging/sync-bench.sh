#!/usr/bin/env bash
# Sync benchmark: node → central over QUIC vs PouchDB replication to pouchdb-server (issue 3).
#
# Run from anywhere:   packaging/sync-bench.sh [crvs-sync-bench options]
#
# Builds crvs-node, crvs-central and crvs-sync-bench in release, installs the pinned PouchDB
# modules and pouchdb-server into packaging/bench/node_modules (npm ci from the committed lock
# file), starts pouchdb-server on 127.0.0.1 with on-disk storage in a temporary directory, and
# runs crvs-sync-bench, which starts central and nodes itself (127.0.0.1, ports chosen by the OS)
# and prints the backlog drain, the no-op sync and the EDGE-like link figures side by side.
# Needs: Rust (cargo), Node.js >= 18 with npm, and the npm registry for the first install.
# Extra arguments go to crvs-sync-bench (e.g. --count 2000 --skip-edge); see --help.
# CRVS_BENCH_KEEP=1 keeps the temporary directory (pouchdb-server's log and data).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need() { command -v "$1" >/dev/null 2>&1 || { echo "sync-bench.sh: $1 is required ($2)" >&2; exit 1; }; }
need cargo "install Rust: https://rustup.rs"
need node "install Node.js 18 or newer"
need npm "install npm (comes with Node.js)"

echo "==> building crvs-node, crvs-central and crvs-sync-bench (release)"
cargo build --release --locked -p crvs-node -p crvs-central -p crvs-tests \
  --bin crvs-node --bin crvs-central --bin crvs-sync-bench
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
export CRVS_NODE_BIN="$target_dir/release/crvs-node"
export CRVS_CENTRAL_BIN="$target_dir/release/crvs-central"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision+uncommitted changes"
fi
echo "    tree $revision; $(node --version); $(nproc) CPUs"

echo "==> installing PouchDB and pouchdb-server (packaging/bench)"
# --ignore-scripts: leveldown loads a prebuilt binary at run time (see bench.sh).
(cd packaging/bench && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
pouchdb_server="$root/packaging/bench/node_modules/.bin/pouchdb-server"
[ -x "$pouchdb_server" ] || { echo "sync-bench.sh: pouchdb-server was not installed" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/crvs-sync-bench.XXXXXX")"
pouch_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$pouch_pid" ] && kill -0 "$pouch_pid" 2>/dev/null; then
    kill -TERM "$pouch_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pouch_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pouch_pid" 2>/dev/null || true
  fi
  if [ "${CRVS_BENCH_KEEP:-0}" = 1 ]; then
    echo "sync-bench.sh: kept $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback port (pouchdb-server prints the port it was given, so port 0 won't do).
pouch_port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
mkdir -p "$work/pouchdb/data"
(
  cd "$work/pouchdb"
  exec "$pouchdb_server" --host 127.0.0.1 --port "$pouch_port" --dir "$work/pouchdb/data" \
    --config "$work/pouchdb/config.json" >"$work/pouchdb/pouchdb.out" 2>&1
) &
pouch_pid=$!
for _ in $(seq 1 300); do
  node -e 'require("http").get(process.argv[1],r=>process.exit(r.statusCode===200?0:1)).on("error",()=>process.exit(1))' \
    "http://127.0.0.1:$pouch_port/" && break
  kill -0 "$pouch_pid" 2>/dev/null || { cat "$work/pouchdb/pouchdb.out" >&2; echo "sync-bench.sh: pouchdb-server exited" >&2; exit 1; }
  sleep 0.1
done
echo "    pouchdb-server on 127.0.0.1:$pouch_port (pid $pouch_pid)"
echo
# The build and npm install leave tens of MB of dirty pages: flushed now, so the kernel's
# writeback of them does not run during either side's measurement.
sync

"$target_dir/release/crvs-sync-bench" --pouch-url "http://127.0.0.1:$pouch_port" \
  --pouch-script "$root/packaging/bench/replicate.js" "$@"
