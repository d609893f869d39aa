# shellcheck shell=bash
# Shared helpers for hack/install-*.sh. Source it; do not run it.
#
# Convention every install script follows (driftwarden.testing.tools relies on it):
#   a tool pinned as FOO_VERSION=vX in versions.env is installed into
#   ${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}/<tool>-<vX>/bin/ and that directory
#   holds a `.complete` marker written only after every binary is in place, so an
#   interrupted build is redone instead of trusted.

set -euo pipefail

DW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../versions.env
set -a
source "$DW_ROOT/versions.env"
set +a
DW_CACHE="${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}"
# GOTOOLCHAIN from versions.env is exported above; Go must never fetch a toolchain.
export GOTOOLCHAIN
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

dw_log() { printf '[%s %s] %s\n' "$(date -u +%H:%M:%S)" "${DW_TOOL:-install}" "$*" >&2; }

dw_die() {
  printf '[%s %s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "${DW_TOOL:-install}" "$*" >&2
  exit 1
}

# dw_tool_dir TOOL VERSION -> prints the cache directory of one pinned tool.
dw_tool_dir() { printf '%s/%s-%s' "$DW_CACHE" "$1" "$2"; }

# dw_is_complete DIR BIN... -> true when DIR/.complete exists and every BIN is executable.
dw_is_complete() {
  local dir=$1; shift
  [[ -f $dir/.complete ]] || return 1
  local b
  for b in "$@"; do [[ -x $dir/bin/$b ]] || return 1; done
}

# dw_mark_complete DIR -> records that DIR is a finished install.
dw_mark_complete() {
  printf 'installed=%s\nby=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(basename "$0")" >"$1/.complete"
}

# dw_require_go MIN -> fails with a clear message unless a local go >= MIN is on PATH.
dw_require_go() {
  local min=$1 have
  command -v go >/dev/null 2>&1 ||
    dw_die "the Go toolchain is not on PATH; install Go >= $min (https://go.dev/doc/install or apt 'golang') and re-run"
  have="$(go env GOVERSION)"
  have="${have#go}"
  if [[ "$(printf '%s\n%s\n' "$min" "$have" | sort -V | head -1)" != "$min" ]]; then
    dw_die "Go $have is too old: this build needs Go >= $min (GOTOOLCHAIN=local forbids downloading one); install a newer Go and re-run"
  fi
}

# dw_go_mod_line KEY GOMOD -> prints the value of a top-level `go`/`godebug`/`toolchain` line.
dw_go_mod_line() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$2"; }

# dw_go_mod_download MODULE@VERSION FIELD -> prints FIELD ("Dir" or "GoMod") of
# `go mod download -json`, or dies with Go's own error (e.g. an unknown version).
dw_go_mod_download() {
  local spec=$1 field=$2 json value
  # Outside any module, so a go.mod in the caller's directory cannot interfere.
  json="$(cd / && go mod download -json "$spec" 2>&1)" || true
  value="$(printf '%s\n' "$json" | sed -n "s/^[[:space:]]*\"$field\": \"\\(.*\\)\",*\$/\\1/p")"
  if [[ -z $value ]]; then
    local err
    err="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",*$/\1/p')"
    dw_die "go mod download $spec failed: ${err:-$json}; check the pin in versions.env against 'go list -m -versions ${spec%@*}'"
  fi
  printf '%s\n' "$value"
}

# dw_apt_ready -> true when Debian packages can be installed here (apt-get, and root or
# password-less sudo); sets DW_AS_ROOT to the command prefix. The caller decides whether
# "no" is an error or a warning.
dw_apt_ready() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [[ $(id -u) -eq 0 ]]; then
    DW_AS_ROOT=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    DW_AS_ROOT=(sudo -n)
  else
    return 1
  fi
}

# dw_apt_install PKG... -> apt-get update, then install PKG... without recommends
# (after dw_apt_ready); dies naming what failed.
dw_apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  "${DW_AS_ROOT[@]}" apt-get update -qq ||
    dw_die "apt-get update failed; check the machine's Debian mirrors and network"
  "${DW_AS_ROOT[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    dw_die "apt-get install $* failed (see above)"
}
