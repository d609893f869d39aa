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
dw_apt_ready ||
  skip "chromium is missing and installing it needs apt-get and root: run 'sudo apt-get install -y --no-install-recommends chromium' (or install chromium with your package manager)"
dw_log "installing chromium with apt-get (a few minutes)"
dw_apt_install chromium
dw_log "installed $(chromium --version)"
