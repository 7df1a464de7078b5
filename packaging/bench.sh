#!/usr/bin/env bash
# Benchmark: crvs-node vs pouchdb-server (on-disk LevelDB), same machine, same documents.
#
# Run from the repository root:   packaging/bench.sh [crvs-bench options]
#
# It builds crvs-node and crvs-bench in release, installs the pinned pouchdb-server with npm into
# packaging/bench/node_modules (npm ci from the committed lock file), starts pouchdb-server and a
# fresh node on 127.0.0.1 with their data in a temporary directory and their default request
# logging on, runs crvs-bench against both and stops everything it started on exit.
# Needs: Rust (cargo), Node.js >= 18 with npm, and the npm registry for the first install.
# Extra arguments go to crvs-bench (e.g. --count 2000 --repeats 1); see `crvs-bench --help`.
# CRVS_BENCH_KEEP=1 keeps the temporary directory (server logs, databases) for inspection.
# CRVS_NODE_BIN=/path/to/crvs-node benchmarks that node binary instead of building this tree's.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench.sh: $1 is required ($2)" >&2; exit 1; }; }
need cargo "install Rust: https://rustup.rs"
need node "install Node.js 18 or newer"
need npm "install npm (comes with Node.js)"

target_dir="$(cargo metadata --format-version 1 --no-deps | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
crvs_bench="$target_dir/release/crvs-bench"
if [ -n "${CRVS_NODE_BIN:-}" ]; then
  echo "==> building crvs-bench (release); node binary: $CRVS_NODE_BIN"
  cargo build --release --locked -p crvs-tests --bin crvs-bench
  crvs_node="$CRVS_NODE_BIN"
  [ -x "$crvs_node" ] || { echo "bench.sh: $crvs_node is not executable" >&2; exit 1; }
else
  echo "==> building crvs-node and crvs-bench (release)"
  cargo build --release --locked -p crvs-node -p crvs-tests --bin crvs-node --bin crvs-bench
  crvs_node="$target_dir/release/crvs-node"
fi
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision+uncommitted changes"
fi
echo "    $("$crvs_node" --version), tree $revision; $(node --version) / pouchdb-server \
$(node -p 'require("./packaging/bench/package.json").dependencies["pouchdb-server"]'); $(nproc) CPUs"

echo "==> installing pouchdb-server (packaging/bench)"
# --ignore-scripts: leveldown ships prebuilt binaries that load at run time; the only other
# install script belongs to sqlite3, which pouchdb-server uses only with --sqlite (not used here).
if [ -f packaging/bench/package-lock.json ]; then
  (cd packaging/bench && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
else
  (cd packaging/bench && npm install --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
pouchdb_server="$root/packaging/bench/node_modules/.bin/pouchdb-server"
[ -x "$pouchdb_server" ] || { echo "bench.sh: pouchdb-server was not installed" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/crvs-bench.XXXXXX")"
pouch_pid=""
node_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in $node_pid $pouch_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in $node_pid $pouch_pid; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${CRVS_BENCH_KEEP:-0}" = 1 ]; then
    echo "bench.sh: kept $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free loopback port for pouchdb-server (it prints its configured port, so port 0 won't do).
pouch_port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"

echo "==> starting pouchdb-server on 127.0.0.1:$pouch_port (LevelDB in $work/pouchdb)"
mkdir -p "$work/pouchdb/data"
# Run from its own directory: pouchdb-server writes config.json and its request log (log.txt)
# to the working directory. Default logging stays on (also to stdout, kept in pouchdb.out).
(
  cd "$work/pouchdb"
  exec "$pouchdb_server" --host 127.0.0.1 --port "$pouch_port" --dir "$work/pouchdb/data" \
    --config "$work/pouchdb/config.json" >"$work/pouchdb/pouchdb.out" 2>&1
) &
pouch_pid=$!

echo "==> initialising and starting crvs-node (data in $work/node)"
cat >"$work/node.toml" <<EOF
# crvs-node bench configuration: defaults except the data directory and listen address.
data_dir = "$work/node/data"
http_listen = "127.0.0.1:0"
standalone_pool = true
pool_size = 1000
pool_low_water = 200
group_commit_max = 128
EOF
"$crvs_node" --config "$work/node.toml" init --demo-locations >"$work/node-init.json"
"$crvs_node" --config "$work/node.toml" client add --name bench --health >"$work/client.json"
json_field() { node -e 'const o=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(o[process.argv[2]])' "$1" "$2"; }
client_id="$(json_field "$work/client.json" clientId)"
client_secret="$(json_field "$work/client.json" clientSecret)"

# Request logs go to stderr at the node's default level (info); keep them in a file.
"$crvs_node" --config "$work/node.toml" run >"$work/node.out" 2>"$work/node.log" &
node_pid=$!
node_addr=""
for _ in $(seq 1 300); do
  node_addr="$(sed -n 's/.*"listening":"\([^"]*\)".*/\1/p' "$work/node.out" 2>/dev/null | head -n 1)"
  [ -n "$node_addr" ] && break
  kill -0 "$node_pid" 2>/dev/null || { cat "$work/node.log" >&2; echo "bench.sh: crvs-node exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$node_addr" ] || { echo "bench.sh: crvs-node did not report its address" >&2; exit 1; }
case "$node_addr" in
  127.0.0.1:*) ;;
  *) echo "bench.sh: crvs-node listens on $node_addr, not loopback" >&2; exit 1 ;;
esac
echo "    crvs-node on $node_addr (pid $node_pid), pouchdb-server pid $pouch_pid"
echo

# crvs-bench waits for both servers to answer and creates the PouchDB database.
CRVS_BENCH_CLIENT_SECRET="$client_secret" "$crvs_bench" \
  --node-url "http://$node_addr" --client-id "$client_id" \
  --pouch-url "http://127.0.0.1:$pouch_port/bench" \
  --node-pid "$node_pid" --pouch-pid "$pouch_pid" "$@"

echo
echo "==> node store after the run (crvs-node status)"
"$crvs_node" --config "$work/node.toml" status
echo "    request log lines: node $(wc -l <"$work/node.log"), pouchdb-server $(wc -l <"$work/pouchdb/log.txt" 2>/dev/null || echo 0)"
