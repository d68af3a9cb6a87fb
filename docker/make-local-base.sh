#!/usr/bin/env bash
# Make Docker usable on a machine that reaches no image registry (what tests/integration/test_docker.py runs):
#   1. Debian's docker.io, debootstrap and docker-compose (apt-get), when missing;
#   2. a dockerd started by hand (no systemd), when none answers: its pid goes to $DOCKERD_PIDFILE, so whoever
#      called this can stop exactly the daemon it started (`kill "$(cat "$DOCKERD_PIDFILE")"`);
#   3. a local base image, `local/python:3.11-slim` (or $1): Debian bookworm minbase with python3, venv and pip
#      (debootstrap), with the host's CA bundle and pip's `cert` setting, so RUN steps reach the package
#      registries as the host does. A Dockerfile takes it through `ARG BASE_IMAGE` / `FROM ${BASE_IMAGE}`: a name
#      with no registry that is present locally is never pulled.
# Idempotent; prints nothing on success. Uses /usr/bin/docker (a newer static client may come first on PATH).
# Exit status 3: Docker cannot be set up here (not root, no apt-get, the install failed); the reason is on stderr.
# Copied from ../shared/tools/docker-base.sh so that the repository does not depend on files beside it.
set -eu
IMAGE=${1:-local/python:3.11-slim}
DOCKERD_PIDFILE=${DOCKERD_PIDFILE:-/tmp/detector-al-dockerd.pid}
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/detector-al-dockerd.log}
D=/usr/bin/docker
export PATH="$PATH:/usr/sbin:/sbin"
cannot() { echo "docker cannot be set up here: $*" >&2; exit 3; }

[ "$(uname -s)" = Linux ] || cannot "not Linux"
[ "$(id -u)" -eq 0 ] || cannot "not root (dockerd, apt-get and debootstrap need root)"
if ! command -v dockerd >/dev/null || [ ! -x $D ] || ! command -v debootstrap >/dev/null || ! command -v docker-compose >/dev/null; then
  command -v apt-get >/dev/null || cannot "no apt-get to install docker.io, debootstrap and docker-compose"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io debootstrap docker-compose; } >"$log" 2>&1; then
    tail -n 3 "$log" >&2; rm -f "$log"
    cannot "apt-get could not install docker.io, debootstrap and docker-compose"
  fi
  rm -f "$log"
fi
if ! $D info >/dev/null 2>&1; then
  setsid nohup "$(command -v dockerd)" >"$DOCKERD_LOG" 2>&1 </dev/null &
  echo $! >"$DOCKERD_PIDFILE"
  for _ in $(seq 1 120); do $D info >/dev/null 2>&1 && break; sleep 0.5; done
  $D info >/dev/null 2>&1 || { tail -n 5 "$DOCKERD_LOG" >&2; cannot "dockerd did not start (see $DOCKERD_LOG)"; }
fi
if ! $D image inspect "$IMAGE" >/dev/null 2>&1; then
  mirror=$( { grep -rhE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
              grep -rhE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'; } \
            | grep -E '/debian/?$' | head -n1 || true)
  rootfs=$(mktemp -d /tmp/detector-al-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$rootfs" \
      "${mirror:-http://deb.debian.org/debian}" >"$rootfs.log" 2>&1; then
    tail -n 5 "$rootfs.log" >&2
    echo "debootstrap failed (see $rootfs.log)" >&2
    exit 1
  fi
  rm -f "$rootfs.log"
  ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
  tar -C "$rootfs" --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' -c . \
    | $D import -c 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
fi
