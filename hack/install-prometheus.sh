#!/usr/bin/env bash
# Installs the pinned Prometheus, promtool and Alertmanager (versions.env) into
#   ${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}/prometheus-<v>/bin/{prometheus,promtool}
#   ${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}/alertmanager-<v>/bin/{alertmanager,amtool}
# from Debian's packages: `apt-get download` + `dpkg -x`, so nothing is installed
# system-wide and no service is started. Idempotent: a finished install (its
# `.complete` marker) is reused; an interrupted one is redone.
set -euo pipefail
DW_TOOL=prometheus
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 ||
  dw_die "apt-get and dpkg are needed to fetch the Debian packages prometheus=$PROMETHEUS_DEB_VERSION and prometheus-alertmanager=$ALERTMANAGER_DEB_VERSION; on another system put prometheus, promtool and alertmanager binaries into $(dw_tool_dir prometheus "$PROMETHEUS_VERSION")/bin and $(dw_tool_dir alertmanager "$ALERTMANAGER_VERSION")/bin and touch .complete in each"

# dw_apt_download PACKAGE VERSION DEST -> the .deb of PACKAGE=VERSION in DEST (runs
# `apt-get update` once when the package index does not list that version yet).
dw_apt_download() {
  local pkg=$1 version=$2 dest=$3
  if ! (cd "$dest" && apt-get download -q "$pkg=$version" >/dev/null 2>&1); then
    dw_log "apt index lacks $pkg=$version; running apt-get update"
    apt-get update -q >/dev/null ||
      dw_die "apt-get update failed; check network access to the Debian mirror and re-run"
    (cd "$dest" && apt-get download -q "$pkg=$version" >/dev/null) ||
      dw_die "apt-get download $pkg=$version failed; is this Debian bookworm? Check 'apt-cache policy $pkg' and the pin in versions.env"
  fi
  compgen -G "$dest/${pkg}_*.deb" >/dev/null || dw_die "no .deb for $pkg appeared in $dest"
}

# dw_install_deb TOOL VERSION PACKAGE DEB_VERSION SRC:DEST... -> unpack PACKAGE and copy
# each /usr/bin/SRC to the tool's bin/DEST.
dw_install_deb() {
  local tool=$1 version=$2 pkg=$3 deb_version=$4; shift 4
  local dir work pair bins=()
  dir="$(dw_tool_dir "$tool" "$version")"
  for pair in "$@"; do bins+=("${pair#*:}"); done
  if dw_is_complete "$dir" "${bins[@]}"; then
    dw_log "$tool $version already installed in $dir"
    return 0
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  dw_log "fetching Debian package $pkg=$deb_version"
  dw_apt_download "$pkg" "$deb_version" "$work"
  dpkg -x "$work"/"${pkg}"_*.deb "$work/root"
  rm -rf "$dir"
  mkdir -p "$dir/bin"
  for pair in "$@"; do
    [[ -x $work/root/usr/bin/${pair%%:*} ]] || dw_die "$pkg=$deb_version has no /usr/bin/${pair%%:*}"
    install -m 0755 "$work/root/usr/bin/${pair%%:*}" "$dir/bin/${pair#*:}"
  done
  # The web console assets are not needed: the tests and the demo use the HTTP API.
  "$dir/bin/${bins[0]}" --version >/dev/null 2>&1 || dw_die "$dir/bin/${bins[0]} does not run on this machine"
  dw_mark_complete "$dir"
  dw_log "installed $tool $version into $dir"
}

dw_install_deb prometheus "$PROMETHEUS_VERSION" prometheus "$PROMETHEUS_DEB_VERSION" \
  prometheus:prometheus promtool:promtool
dw_install_deb alertmanager "$ALERTMANAGER_VERSION" prometheus-alertmanager "$ALERTMANAGER_DEB_VERSION" \
  prometheus-alertmanager:alertmanager amtool:amtool
