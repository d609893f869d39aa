#!/usr/bin/env bash
# Installs Debian's podman and buildah (with runc, fuse-overlayfs, uidmap, slirp4netns)
# and mmdebstrap: the images tier and `make images` build our images with them where no
# Docker engine answers, and the pods tier imports those images into its real nodes.
# Idempotent: packages already installed are kept. Debian bookworm ships podman 4.3.1
# and buildah 1.28.2, the versions docs/images.md describes; like chromium they are not
# pinned to an exact build (Debian's security archive keeps only the newest).
set -euo pipefail
export DW_TOOL=podman
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

packages=(podman buildah runc fuse-overlayfs uidmap slirp4netns mmdebstrap iptables)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  dw_log "$(podman --version) and buildah $(buildah --version | awk '{print $3}') already installed"
  exit 0
fi
dw_apt_ready ||
  dw_die "missing ${missing[*]}; installing them needs apt-get and root: run 'sudo apt-get install -y --no-install-recommends ${missing[*]}' (or use your package manager)"
dw_log "installing ${missing[*]} with apt-get"
dw_apt_install "${missing[@]}"
dw_log "installed $(podman --version), buildah $(buildah --version | awk '{print $3}')"
