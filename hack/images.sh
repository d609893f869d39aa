#!/usr/bin/env bash
# `make images`: builds the operator, model-server and drift-worker images from their
# Dockerfiles, with Docker where an engine answers and podman/buildah otherwise, and
# prints each image's size. Usage: hack/images.sh [--torch] [COMPONENT...]
#   COMPONENT: operator, model-server, drift-worker (default: all three);
#   --torch also builds the model-server-torch / drift-worker-torch flavours.
# Images are tagged $IMAGE_PREFIX/<component>:$IMAGE_TAG (driftwarden/...:dev; the torch
# flavour :$IMAGE_TAG-torch) in the local image store; nothing is pushed anywhere.
#
# DW_NO_CACHE=1 builds without the engine's layer cache (a cold build).
#
# Cached by content: each image carries a label with the hash of what goes into it
# (its Dockerfile, pyproject.toml, constraints.txt, README.md, src/, the base image id
# and the build args); an image whose label matches is not rebuilt.
#
# The base: PYTHON_IMAGE (versions.env) when it is present or can be pulled; else a
# Debian bookworm base made with mmdebstrap (python3, python3-venv) and imported as
# $BASE_IMAGE (podman only).
#
# podman here runs as root with overlay storage, cgroupfs, file events and runc, and
# builds with the host network; the host's CA bundle and pip configuration are mounted
# read-only into each build step, never copied into an image.
set -euo pipefail
DW_TOOL=images
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

IMAGE_PREFIX=${IMAGE_PREFIX:-driftwarden}
IMAGE_TAG=${IMAGE_TAG:-dev}
BASE_IMAGE=${BASE_IMAGE:-localhost/driftwarden/python-base:bookworm}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-}
HASH_LABEL=io.driftwarden.content-hash

torch=0
components=()
for arg in "$@"; do
  case $arg in
    --torch) torch=1 ;;
    operator | model-server | drift-worker) components+=("$arg") ;;
    *) dw_die "unknown argument '$arg' (components: operator model-server drift-worker; --torch)" ;;
  esac
done
((${#components[@]})) || components=(operator model-server drift-worker)

PODMAN_ARGS=(--cgroup-manager=cgroupfs --events-backend=file --runtime=runc)
# podman's default ulimits exceed this host's hard limits, and root here may not raise
# them (no CAP_SYS_RESOURCE): pass explicit ones (nofile: the host's hard limit; nproc:
# 4096, which runc here could set where the host's own hard limit failed).
ULIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
if [[ -z ${DW_ENGINE:-} ]]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    DW_ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then
    DW_ENGINE=podman
  else
    dw_die "no container engine: start Docker, or install podman and buildah (Debian: apt-get install podman buildah mmdebstrap)"
  fi
fi

engine() {
  if [[ $DW_ENGINE == podman ]]; then podman "${PODMAN_ARGS[@]}" "$@"; else docker "$@"; fi
}

image_id() { engine image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# ensure_base -> sets BASE to an image reference the Dockerfiles can start FROM.
ensure_base() {
  if [[ -n $(image_id "$PYTHON_IMAGE") ]]; then
    BASE=$PYTHON_IMAGE
    return
  fi
  if [[ -z ${DW_NO_PULL:-} ]] && engine pull --quiet "$PYTHON_IMAGE" >/dev/null 2>&1; then
    BASE=$PYTHON_IMAGE
    return
  fi
  [[ $DW_ENGINE == podman ]] || dw_die "cannot pull $PYTHON_IMAGE; the Debian base fallback needs podman"
  BASE=$BASE_IMAGE
  if [[ -n $(image_id "$BASE") ]]; then
    dw_log "$PYTHON_IMAGE cannot be pulled; using the Debian base $BASE built earlier"
    return
  fi
  command -v mmdebstrap >/dev/null 2>&1 || dw_die "cannot pull $PYTHON_IMAGE and mmdebstrap is not installed (apt-get install mmdebstrap)"
  dw_log "$PYTHON_IMAGE cannot be pulled: building the Debian bookworm base $BASE with mmdebstrap"
  local tarball
  tarball="$(mktemp --suffix=.tar)"
  # shellcheck disable=SC2064
  trap "rm -f '$tarball'" EXIT
  # shellcheck disable=SC2016 # "$1" in the hook is mmdebstrap's, expanded by its shell
  mmdebstrap --variant=minbase --quiet --format=tar \
    --include=python3,python3-venv,python-is-python3,passwd \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$tarball"
  engine import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$BASE" >/dev/null
  rm -f "$tarball"
  dw_log "imported $BASE"
}

# content_hash FOLDER FLAVOUR -> hash of everything that goes into one image.
content_hash() {
  (
    cd "$DW_ROOT"
    {
      printf 'base=%s\nflavour=%s\ntorch-index=%s\n' "$(image_id "$BASE")" "$2" "$TORCH_CPU_INDEX"
      find "$1/Dockerfile" pyproject.toml constraints.txt README.md .dockerignore src \
        -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
  )
}

build() { # COMPONENT FLAVOUR
  local component=$1 flavour=$2 folder image hash have started
  folder=${component//-/_}
  image="$IMAGE_PREFIX/$component:$IMAGE_TAG${flavour:+-$flavour}"
  hash="$(content_hash "$folder" "$flavour")"
  have="$(engine image inspect --format "{{ index .Labels \"$HASH_LABEL\" }}" "$image" 2>/dev/null || true)"
  if [[ $have == "$hash" ]]; then
    dw_log "$image is up to date ($hash)"
    return
  fi
  dw_log "building $image from $folder/Dockerfile on $BASE"
  started=$SECONDS
  local args=(--file "$DW_ROOT/$folder/Dockerfile" --tag "$image" --label "$HASH_LABEL=$hash"
    --build-arg "PYTHON_IMAGE=$BASE" --network host)
  [[ $component == operator ]] ||
    args+=(--build-arg "FLAVOUR=$flavour" --build-arg "TORCH_CPU_INDEX=$TORCH_CPU_INDEX")
  [[ -z ${DW_NO_CACHE:-} ]] || args+=(--no-cache)
  if [[ $DW_ENGINE == podman ]]; then
    args+=(--pull=never --layers "${ULIMITS[@]}")
    local ca=${DW_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    [[ -f $ca ]] && args+=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
    [[ -f /etc/pip.conf ]] && args+=(--volume /etc/pip.conf:/etc/pip.conf:ro)
    podman "${PODMAN_ARGS[@]}" build "${args[@]}" "$DW_ROOT"
  else
    docker build "${args[@]}" "$DW_ROOT"
  fi
  dw_log "built $image in $((SECONDS - started)) s"
}

ensure_base
built=()
for component in "${components[@]}"; do
  build "$component" ""
  built+=("$IMAGE_PREFIX/$component:$IMAGE_TAG")
  if ((torch)) && [[ $component != operator ]]; then
    build "$component" torch
    built+=("$IMAGE_PREFIX/$component:$IMAGE_TAG-torch")
  fi
done
printf '%-45s %10s\n' IMAGE SIZE
for image in "${built[@]}"; do
  size="$(engine image inspect --format '{{.Size}}' "$image")"
  printf '%-45s %7d MB\n' "$image" "$((size / 1000000))"
done
