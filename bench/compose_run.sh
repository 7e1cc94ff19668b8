#!/usr/bin/env bash
# Build the image and run docker-compose.yml for real with podman, on a machine that
# cannot reach Docker Hub: a local base from Debian's own packages (debootstrap +
# podman import, Debian's python3.11 in a venv), Redis and PostgreSQL images from
# Debian's packages, then the Compose file with podman-compose: Redis, PostgreSQL,
# --scale worker=3, and the scheduler service until its study has finished.
#
# Slow (TensorFlow goes into the image) and needs root, network access to Debian's
# mirror and PyPI, podman and runc: run it once per change to the image, not in CI.
#   apt-get install -y podman runc debootstrap && bash bench/compose_run.sh
#
# Settings (environment): TRIALS (default 20), WORKERS (replicas, default 3),
# WORKER_CONCURRENCY (default 1), WORK (scratch folder, default /var/tmp/seqsweep-compose),
# KEEP=1 leaves the stack running at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-/var/tmp/seqsweep-compose}
TRIALS=${TRIALS:-20}
WORKERS=${WORKERS:-3}
PROJECT=seqsweep-bench
BASE=localhost/seqsweep-base:bookworm
MIRROR=http://deb.debian.org/debian
mkdir -p "$WORK"

# crun refuses this machine's hybrid cgroup layout, and raising rlimits is not
# permitted here: runc, cgroupfs and explicit lower limits for every container,
# also those podman-compose starts.
export CONTAINERS_CONF="$PWD/bench/compose/containers.conf"
step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "base image $BASE from debootstrap"
if ! podman image exists "$BASE"; then
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  # python3.11-venv's own dependencies are listed too: debootstrap does not resolve them.
  debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3,python3-pip-whl,python3-setuptools-whl,ca-certificates \
    bookworm "$rootfs" "$MIRROR"
  # `python` and `pip` on PATH, as in python:3.11-slim; a venv, because Debian's
  # own pip refuses to install into the system Python (PEP 668).
  chroot "$rootfs" python3.11 -m venv /opt/venv
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python"]' - "$BASE"
  rm -rf "$rootfs"
fi
podman run --rm "$BASE" python -c 'import sys; print("base:", sys.version.split()[0], sys.prefix)'

step "redis and postgres images from Debian's packages"
podman build --network host --build-arg BASE="$BASE" -t localhost/seqsweep-redis:bookworm \
  -f bench/compose/redis.Containerfile bench/compose
podman build --network host --build-arg BASE="$BASE" -t localhost/seqsweep-postgres:bookworm \
  -f bench/compose/postgres.Containerfile bench/compose

step "seqsweep image"
# A machine whose HTTPS goes through a proxy with its own CA lends the build its CA
# bundle and pip.conf (cert = ...) as read-only mounts: they reach pip, not the image.
trust=()
if [ -f /etc/pip.conf ]; then
  trust=(-v /etc/pip.conf:/etc/pip.conf:ro -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
podman build --network host "${trust[@]}" --build-arg BASE="$BASE" -t localhost/seqsweep:local .
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep seqsweep

step "podman-compose"
# Debian's podman-compose 1.0.3 ignores --scale; 1.6 honours it.
if [ ! -x "$WORK/venv/bin/podman-compose" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q "podman-compose==1.6.0"
fi
export SEQSWEEP_IMAGE=localhost/seqsweep:local BASE_IMAGE="$BASE"
export REDIS_IMAGE=localhost/seqsweep-redis:bookworm
export POSTGRES_IMAGE=localhost/seqsweep-postgres:bookworm
export WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-1} TRIALS STUDY=${STUDY:-compose}
compose() { "$WORK/venv/bin/podman-compose" -p "$PROJECT" "$@"; }
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    step "down"
    compose down -v >/dev/null 2>&1 || true
    # podman-compose 1.6 with podman 4.3 left scaled replicas running after `down`.
    leftover=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")
    [ -z "$leftover" ] || podman rm -f $leftover >/dev/null
    podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step "up: redis, postgres"
compose up -d redis postgres
for _ in $(seq 1 60); do
  compose exec postgres pg_isready -h 127.0.0.1 -U seqsweep -d seqsweep >/dev/null 2>&1 && break
  sleep 2
done
step "up: --scale worker=$WORKERS"
compose up -d --no-deps --scale "worker=$WORKERS" worker
podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}} {{.Status}}'

step "run: the scheduler service ($TRIALS trials)"
start=$(date +%s)
compose --profile scheduler run --rm scheduler
echo "scheduler service finished in $(( $(date +%s) - start )) s"

step "status (trials per worker container)"
compose --profile scheduler run --rm scheduler python -m scheduler status --study "$STUDY"
