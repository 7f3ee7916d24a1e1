#!/usr/bin/env bash
# Provide the base images that docker-compose.yml and the Dockerfile name
# (python:3.11-slim, redis:7, postgres:15) on a host that cannot reach a
# container registry.
#
# For each image: if it is already in podman's store -> keep it (cache);
# else try `podman pull` -> use the real image; else build a stand-in from
# Debian bookworm packages:
#   base      debootstrap --variant=minbase bookworm, `podman import`ed
#   python    Debian's python3 (3.11) + python3-venv + python3-pip,
#             /usr/local/bin/python -> python3 (like the official image)
#   redis     Debian's redis-server (7.0), entrypoint compatible with the
#             official image (args passed through, /data, protected-mode off)
#   postgres  Debian's postgresql-15, entrypoint compatible with the official
#             image (POSTGRES_USER/PASSWORD/DB, PGDATA init on first start,
#             /docker-entrypoint-initdb.d)
# Stand-ins carry the label io.keras-trainer.standin=true.
#
# Env: STANDIN_WORKDIR (default <repo>/var/standins), DEBIAN_MIRROR,
#      STANDIN_FORCE=1 (rebuild even if the tag exists), STANDIN_NO_PULL=1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${STANDIN_WORKDIR:-$ROOT/var/standins}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm

BASE_TAG=localhost/keras-trainer/standin-debian:bookworm
PYTHON_TAG=${PYTHON_IMAGE:-docker.io/library/python:3.11-slim}
REDIS_TAG=${REDIS_IMAGE:-docker.io/library/redis:7}
POSTGRES_TAG=${POSTGRES_IMAGE:-docker.io/library/postgres:15}

log() { printf '[standins] %s\n' "$*" >&2; }

# Short names (python:3.11-slim) -> docker.io/library/... as podman stores them.
qualify() {
    case "$1" in
        */*/*) echo "$1" ;;
        */*) echo "docker.io/$1" ;;
        *) echo "docker.io/library/$1" ;;
    esac
}
PYTHON_TAG=$(qualify "$PYTHON_TAG")
REDIS_TAG=$(qualify "$REDIS_TAG")
POSTGRES_TAG=$(qualify "$POSTGRES_TAG")

have() { [ "${STANDIN_FORCE:-0}" != 1 ] && podman image exists "$1"; }

try_pull() {
    [ "${STANDIN_NO_PULL:-0}" = 1 ] && return 1
    log "trying: podman pull $1"
    timeout 300 podman pull -q "$1" >/dev/null 2>"$WORK/pull.err" && return 0
    log "pull failed: $(tail -n1 "$WORK/pull.err")"
    return 1
}

build_base() {
    if have "$BASE_TAG"; then log "cached: $BASE_TAG"; return; fi
    command -v debootstrap >/dev/null || { log "debootstrap missing (apt-get install debootstrap)"; exit 1; }
    local t0=$SECONDS rootfs="$WORK/rootfs-$SUITE"
    rm -rf "$rootfs"
    log "debootstrap --variant=minbase $SUITE ($MIRROR) ..."
    debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }
    # What the Docker Hub debian images do: no daemons started by postinst,
    # no docs/man/locales, no apt caches.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::GzipIndexes "true";
APT::Install-Recommends "false";
EOF
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/*/changelog* \
        "$rootfs"/usr/share/man/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
    : >"$rootfs/etc/resolv.conf"
    : >"$rootfs/etc/hostname"
    log "podman import -> $BASE_TAG"
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$WORK/rootfs-$SUITE.tar" .
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["bash"]' \
        --change 'LABEL io.keras-trainer.standin=true' \
        "$WORK/rootfs-$SUITE.tar" "$BASE_TAG" >/dev/null
    rm -rf "$rootfs" "$WORK/rootfs-$SUITE.tar"
    log "built $BASE_TAG in $((SECONDS - t0))s"
}

# A stand-in is rebuilt when its Containerfile or entrypoint changed (the hash
# of deploy/podman/standins/<name>/ is in a label); a real image is kept.
src_hash() { (cd "$HERE/standins/$1" && find . -type f | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16; }

build_standin() { # name tag
    local name=$1 tag=$2 t0=$SECONDS hash label
    hash=$(src_hash "$name")
    if have "$tag"; then
        label=$(podman image inspect "$tag" \
            --format '{{index .Labels "io.keras-trainer.standin"}} {{index .Labels "io.keras-trainer.standin.hash"}}' 2>/dev/null || true)
        case "$label" in
            "true $hash") log "cached: $tag (stand-in)"; return ;;
            true*) ;;
            *) log "cached: $tag"; return ;;
        esac
        log "stand-in $tag is out of date (sources changed): rebuilding"
    elif try_pull "$tag"; then
        log "pulled: $tag (real image)"; return
    fi
    build_base
    log "building stand-in $tag from deploy/podman/standins/$name ..."
    podman build --format docker --pull=never --build-arg "BASE_IMAGE=$BASE_TAG" \
        --label io.keras-trainer.standin=true --label "io.keras-trainer.standin.hash=$hash" \
        -t "$tag" "$HERE/standins/$name" >"$WORK/build-$name.log" 2>&1 \
        || { tail -n 40 "$WORK/build-$name.log" >&2; exit 1; }
    log "built stand-in $tag in $((SECONDS - t0))s"
    echo "$name $((SECONDS - t0))" >>"$WORK/timings.txt"
}

mkdir -p "$WORK"
want=${*:-python redis postgres}
for name in $want; do
    case $name in
        python) build_standin python "$PYTHON_TAG" ;;
        redis) build_standin redis "$REDIS_TAG" ;;
        postgres) build_standin postgres "$POSTGRES_TAG" ;;
        *) log "unknown image: $name"; exit 2 ;;
    esac
done
