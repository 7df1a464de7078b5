#!/usr/bin/env bash
# Login benchmark: login latency and throughput at a node, and the cost of an authorization check
# on the hot path of notify (issue "People and workflow").
#
# Run from anywhere:   packaging/login-bench.sh [crvs-login-bench options]
#
# Builds crvs-node, crvs-central and crvs-login-bench in release (--locked) and runs
# crvs-login-bench, which starts central and one enrolled node itself (127.0.0.1, ports chosen
# by the OS; node in demo mode, two_factor = false), makes users at central, waits until they are
# at the node, logs them in and prints the figures. No targets: figures only.
# Needs: Rust (cargo). Nothing is downloaded beyond what cargo needs for the build.
# Extra arguments go to crvs-login-bench (e.g. --users 100 --runs 1); see --help.
# Its processes' data and logs live in a temporary directory, removed on exit unless
# CRVS_BENCH_KEEP=1; on exit (or Ctrl-C) everything the bench started is stopped.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

command -v cargo >/dev/null 2>&1 || { echo "login-bench.sh: cargo is required (install Rust: https://rustup.rs)" >&2; exit 1; }

echo "==> building crvs-node, crvs-central and crvs-login-bench (release)"
cargo build --release --locked -p crvs-node -p crvs-central -p crvs-tests \
  --bin crvs-node --bin crvs-central --bin crvs-login-bench
# `cargo metadata` prints one line of JSON; the target directory is a plain path in it.
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -d "$target_dir" ] || { echo "login-bench.sh: no target directory ($target_dir)" >&2; exit 1; }
export CRVS_NODE_BIN="$target_dir/release/crvs-node"
export CRVS_CENTRAL_BIN="$target_dir/release/crvs-central"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision+uncommitted changes"
fi
echo "    $("$CRVS_NODE_BIN" --version), tree $revision; $(nproc) CPUs"

work="$(mktemp -d "${TMPDIR:-/tmp}/crvs-login-bench.XXXXXX")"
bench_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # The bench stops central and the node when it ends, on SIGTERM as well; should it not end,
  # its own children are stopped by parent pid and then the bench.
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$bench_pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$bench_pid" 2>/dev/null; then
      pkill -KILL -P "$bench_pid" 2>/dev/null || true
      kill -KILL "$bench_pid" 2>/dev/null || true
    fi
  fi
  if [ "${CRVS_BENCH_KEEP:-0}" = 1 ]; then
    echo "login-bench.sh: kept $work"
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo

# The harness makes central's and the node's directories under TMPDIR, i.e. inside $work.
# In the background, so a signal reaches the trap at once; `wait` passes on the exit status.
TMPDIR="$work" "$target_dir/release/crvs-login-bench" "$@" &
bench_pid=$!
wait "$bench_pid"
