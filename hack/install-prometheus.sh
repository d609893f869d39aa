#!/usr/bin/env bash
# Installs the pinned Prometheus, promtool and Alertmanager (versions.env) into
#   ${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}/prometheus-<v>/bin/{prometheus,promtool}
#   ${DRIFTWARDEN_CACHE:-$HOME/.cache/driftwarden}/alertmanager-<v>/bin/{alertmanager,amtool}
# Prometheus comes from Debian's package (`apt-get download` + `dpkg -x`: nothing is
# installed system-wide, no service is started). Alertmanager is built from its Go
# module: Debian's binary loads its default notification template from
# /usr/share/prometheus/alertmanager, which only a system-wide install provides.
# Idempotent: a finished install (its `.complete` marker) is reused; an interrupted one
# is redone.
set -euo pipefail
# shellcheck disable=SC2034  # read by dw_log/dw_die in lib.sh
export DW_TOOL=prometheus
# shellcheck source=hack/lib.sh
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"


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
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    dw_die "apt-get and dpkg are needed to fetch the Debian package $pkg=$deb_version; on another system put ${bins[*]} into $dir/bin and touch $dir/.complete"
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
# dw_install_alertmanager -> alertmanager and amtool built from the pinned Go module.
dw_install_alertmanager() {
  local dir gobin
  dir="$(dw_tool_dir alertmanager "$ALERTMANAGER_VERSION")"
  if dw_is_complete "$dir" alertmanager amtool; then
    dw_log "alertmanager $ALERTMANAGER_VERSION already installed in $dir"
    return 0
  fi
  dw_require_go 1.23
  rm -rf "$dir"
  gobin="$dir/bin.partial"
  mkdir -p "$gobin"
  dw_log "building alertmanager and amtool $ALERTMANAGER_VERSION from the Go module (a few minutes)"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${ALERTMANAGER_VERSION#v}" \
    "github.com/prometheus/alertmanager/cmd/alertmanager@$ALERTMANAGER_VERSION" \
    "github.com/prometheus/alertmanager/cmd/amtool@$ALERTMANAGER_VERSION" ||
    dw_die "go install of alertmanager $ALERTMANAGER_VERSION failed (see above); check that the Go module proxy is reachable"
  mv "$gobin" "$dir/bin"
  "$dir/bin/alertmanager" --version >/dev/null 2>&1 || dw_die "$dir/bin/alertmanager does not run on this machine"
  dw_mark_complete "$dir"
  dw_log "installed alertmanager $ALERTMANAGER_VERSION into $dir"
}

dw_install_alertmanager
