#!/usr/bin/env bash
# Installs Debian's chromium, which the e2e tier uses headless to render the demo's
# drift report page (tests/e2e/test_demo_*.py). Idempotent: an installed chromium is kept.
#
# Not pinned to an exact package version on purpose: Debian's security archive keeps
# only the newest chromium build, so an exact pin would stop installing within weeks.
# The test only needs a headless browser that renders HTML and PNGs.
set -euo pipefail
export DW_TOOL=chromium
# shellcheck source=hack/lib.sh
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

if command -v chromium >/dev/null 2>&1; then
  dw_log "$(chromium --version 2>/dev/null || echo chromium) already installed at $(command -v chromium)"
  exit 0
fi
# Only the e2e tier needs chromium: where it cannot be installed, say so and carry on,
# so `make demo` still works for a user without root (the e2e test then fails, naming
# this script).
skip() {
  dw_log "WARNING: $1; the e2e report test (tests/e2e/test_demo_*.py) needs chromium"
  exit 0
}
command -v apt-get >/dev/null 2>&1 ||
  skip "chromium is missing and this is not a Debian/Ubuntu system (no apt-get): install chromium with your package manager"
if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  skip "chromium is missing and installing it needs root: run 'sudo apt-get install -y --no-install-recommends chromium'"
fi
dw_log "installing chromium with apt-get (a few minutes)"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq ||
  dw_die "apt-get update failed; check the machine's Debian mirrors and network"
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null ||
  dw_die "apt-get install chromium failed (see above)"
dw_log "installed $(chromium --version)"
