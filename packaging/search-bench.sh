#!/usr/bin/env bash
# Search benchmark: national search at central over 1,000,000 generated birth records (issue
# "Central registry"): p50/p95 server time of search by tracking id, by registration number, and
# fuzzy child name + date-of-birth range + within district, beside the full scan answering the
# same fuzzy query, with the ratios to the targets (fuzzy p95 >= 100x faster than the scan;
# exact lookups under 1 ms).
#
# Run from anywhere:   packaging/search-bench.sh [crvs-search-bench options]
#
# Builds crvs-search-bench in release (--locked) and runs it; it generates the records straight
# into a central store in a temporary directory (removed when it ends) through the same search
# index sync maintains. Needs: Rust (cargo) and about 7 GiB of free disk for 1,000,000 records.
# Extra arguments go to crvs-search-bench (e.g. --count 100000 --queries 100 --scans 1).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

command -v cargo >/dev/null 2>&1 || { echo "search-bench.sh: cargo is required (install Rust: https://rustup.rs)" >&2; exit 1; }

echo "==> building crvs-search-bench (release)"
cargo build --release --locked -p crvs-tests --bin crvs-search-bench
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -d "$target_dir" ] || { echo "search-bench.sh: no target directory ($target_dir)" >&2; exit 1; }
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision+uncommitted changes"
fi
echo "    tree $revision; $(nproc) CPUs"
exec "$target_dir/release/crvs-search-bench" "$@"
