#!/usr/bin/env bash
# End-to-end test of docker-compose.yml with podman and podman-compose on a
# host with no Docker engine and no registry access.
#
#   deploy/podman/test-compose.sh          (or: make test-compose)
#
# 1. installs what is missing: podman runc uidmap debootstrap (apt), and
#    podman-compose + h5py (deploy/podman/requirements-tools.txt) in var/compose-venv
# 2. builds stand-in base images where the real ones cannot be pulled
#    (deploy/podman/build-standins.sh)
# 3. builds the app image (timed; "cold" when no layer is cached), then a warm
#    rebuild after a source change (on a scratch copy of the build context)
# 4. README's quick start, verbatim: the block after <!-- quick-start:compose -->
#    (cp .env.example .env, docker compose up -d --build --wait, a token made
#    with core.tokens, a curl with it), run in a scratch copy of the work tree
#    with `docker compose` mapped to podman-compose. Two adaptations: the
#    api's port is $API_PORT, not 8000 (localhost:8000 -> 127.0.0.1:$API_PORT),
#    and --wait is done here (podman 4.3 cannot `podman wait --condition=healthy`);
#    then: no token / the old shipped token -> 401, the api's log says how to make
#    a token, the worker has its memory limit
# 5. as an outside client on 127.0.0.1:$API_PORT with that token: small job -> succeeded,
#    model h5 downloaded, sha256 == ETag == X-Checksum-Sha256, kernel sparsity
#    in the h5 ~= result.sparsity.overall
# 6. a longer job; `compose restart worker` while it runs (SIGTERM, stop_grace_period):
#    the worker hands the job back with a checkpoint, the restarted worker resumes
#    it; it must succeed on attempt 2 with every epoch trained once, within
#    RESTART_TIMEOUT seconds
# 7. scale-out: SCALE_JOBS (20) small jobs on one worker, then `up --scale worker=2`
#    and SCALE_JOBS more with one of the two workers restarted mid-run: every job
#    succeeded exactly once (no epoch trained twice); the two wall times and
#    their ratio go to the summary (SKIP_SCALE=1 skips this)
# 8. compose down -v (KEEP=1 leaves the stack up)
#
# Env: API_PORT (18000), FLOWER_PORT (15555), PROJECT (kt-compose-test),
#      EXTRA_CA_FILE (PEM with extra CAs for pip in the build; default: the
#      host's /usr/local/share/ca-certificates/*.crt, if any; NO_EXTRA_CA=1 = none),
#      LONG_EPOCHS (150), LONG_BATCH (2), RESTART_TIMEOUT (300), SCALE_JOBS (20),
#      SCALE_EPOCHS (40), SKIP_SCALE=1, KEEP=1,
#      SKIP_WARM_BUILD=1, COLD_BUILD=1 (build the app image with --no-cache).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

PROJECT=${PROJECT:-kt-compose-test}
API_PORT=${API_PORT:-18000}
FLOWER_PORT=${FLOWER_PORT:-15555}
OUT=$ROOT/var/podman-test
VENV=$ROOT/var/compose-venv
RESTART_TIMEOUT=${RESTART_TIMEOUT:-300}
BASE=http://127.0.0.1:$API_PORT

export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}
export BUILDAH_FORMAT=docker          # keep HEALTHCHECK in the built image
export TF_VARIANT=cpu
export API_PUBLISH=127.0.0.1:$API_PORT
export FLOWER_PUBLISH=127.0.0.1:$FLOWER_PORT

T_START=$SECONDS
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
say() { printf '[test-compose] %s\n' "$*" >&2; }
note() { say "$*"; printf '%s\n' "$*" >>"$SUMMARY"; }
fail() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (rootful podman, apt-get)"

# ---------------------------------------------------------------- 1. tools
need_apt=()
for pkg in podman runc uidmap debootstrap; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    say "apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ ! -f "$VENV/.tools-stamp" ] || [ "$HERE/requirements-tools.txt" -nt "$VENV/.tools-stamp" ]; then
    say "pip install -r deploy/podman/requirements-tools.txt into $VENV"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$HERE/requirements-tools.txt"
    touch "$VENV/.tools-stamp"
fi
PC=("$VENV/bin/podman-compose" -p "$PROJECT" -f docker-compose.yml)
CLIENT=("$VENV/bin/python" "$HERE/compose_smoke.py" --base "$BASE")
note "podman $(podman version --format '{{.Client.Version}}'), $("$VENV/bin/podman-compose" --version 2>/dev/null | head -n1), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}')"

# A bridge left by podman run with Debian's default CNI backend (podman without
# this containers.conf) claims netavark's 10.88.0.0/16: containers then have no
# outbound traffic (no DNS, no apt/pip in the build). Remove it when unused.
if ip link show cni-podman0 >/dev/null 2>&1 && ! ip link show master cni-podman0 2>/dev/null | grep . >/dev/null; then
    ip link delete cni-podman0 && note "removed the unused CNI bridge cni-podman0 (it shadowed netavark's subnet)"
fi

for port in "$API_PORT" "$FLOWER_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port 127.0.0.1:$port is in use"; fi
done

# Extra CA for pip inside the build (TLS-intercepting proxy): a build secret
# given through a small compose override, only when there is one.
# Where from: the host's locally added CAs, else a bundle that PIP_CERT,
# REQUESTS_CA_BUNDLE or SSL_CERT_FILE name if it is not Debian's own.
EXTRA_CA_FILE=${EXTRA_CA_FILE:-}
QS_FILES=()
if [ -z "$EXTRA_CA_FILE" ] && [ "${NO_EXTRA_CA:-0}" != 1 ]; then
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        EXTRA_CA_FILE=$OUT/extra-ca.pem
        cat /usr/local/share/ca-certificates/*.crt >"$EXTRA_CA_FILE"
    else
        for f in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
            if [ -n "$f" ] && [ -s "$f" ] && [ "$(readlink -f "$f")" != /etc/ssl/certs/ca-certificates.crt ]; then
                EXTRA_CA_FILE=$f; break
            fi
        done
    fi
fi
if [ -n "$EXTRA_CA_FILE" ]; then
    export EXTRA_CA_FILE
    PC+=(-f "$HERE/docker-compose.extra-ca.yml")
    QS_FILES=(-f docker-compose.yml -f "$HERE/docker-compose.extra-ca.yml")
    note "pip in the build trusts the extra CAs in $EXTRA_CA_FILE (build secret extra_ca)"
fi

# ---------------------------------------------------------------- 2. base images
t0=$SECONDS
"$HERE/build-standins.sh"
note "base images ready in $((SECONDS - t0))s: $(podman images --format '{{.Repository}}:{{.Tag}}={{.Size}}' \
    --filter reference=docker.io/library/python --filter reference=docker.io/library/redis \
    --filter reference=docker.io/library/postgres | tr '\n' ' ')"

# ---------------------------------------------------------------- health ticker
# podman < 4.6 runs healthchecks from systemd timers; this host has no
# systemd, so tick them here (what the timers would do), every 3 s.
TICKER_PID=
start_ticker() {
    (
        while :; do
            for c in $(podman ps -q --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null); do
                timeout 30 podman healthcheck run "$c" >/dev/null 2>&1 || true
            done
            sleep 3
        done
    ) &
    TICKER_PID=$!
}
cleanup() {
    rc=$?
    [ -n "$TICKER_PID" ] && kill "$TICKER_PID" 2>/dev/null || true
    if [ "${QS_RUNNING:-0}" = 1 ]; then
        say "the README quick start failed; its output ($OUT/quickstart.log):"
        grep -v 'systemd connection' "$OUT/quickstart.log" | tail -n 40 >&2 || true
    fi
    if [ "$rc" != 0 ]; then
        say "failure: last logs of each container"
        for c in $(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null); do
            echo "----- $c ($(podman inspect "$c" --format '{{.State.Status}} {{.State.Health.Status}}' 2>/dev/null))" >&2
            podman logs --tail 25 "$c" 2>&1 | grep -v 'systemd connection' >&2 || true
        done
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        say "KEEP=1: stack left up; stop it with: ${PC[*]} down -v"
    else
        t=$SECONDS
        # `down` knows one container per service: a worker added by --scale would keep the network and volumes
        podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" --filter "label=io.podman.compose.service=worker" \
            | xargs -r podman rm -f -t 30 >/dev/null 2>&1 || true
        "${PC[@]}" down -v >"$OUT/down.log" 2>&1 || say "compose down failed (see $OUT/down.log)"
        say "compose down -v in $((SECONDS - t))s"
    fi
    say "total $((SECONDS - T_START))s; summary in $SUMMARY"
    if [ "$rc" = 0 ]; then say "PASSED"; else say "FAILED (rc=$rc)"; fi
}
trap cleanup EXIT

health_of() { podman inspect "$1" --format '{{.State.Health.Status}}' 2>/dev/null || echo missing; }
ctr_of() { podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$PROJECT" \
    --filter "label=io.podman.compose.service=$1" | head -n1; }

wait_healthy() { # timeout service...
    local deadline=$((SECONDS + $1)) s c h all; shift
    while :; do
        all=1
        for s in "$@"; do
            c=$(ctr_of "$s"); h=$( [ -n "$c" ] && health_of "$c" || echo missing)
            [ "$h" = healthy ] || all=0
        done
        [ $all = 1 ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            for s in "$@"; do c=$(ctr_of "$s"); say "$s: ${c:-no container} $( [ -n "$c" ] && health_of "$c")"; done
            return 1
        fi
        sleep 2
    done
}

# ---------------------------------------------------------------- 3. builds
"${PC[@]}" down -v >/dev/null 2>&1 || true
image_cached=$(podman image exists "localhost/keras-trainer:$TF_VARIANT" && echo "layer cache" || echo "no image yet")
nocache=()
[ "${COLD_BUILD:-0}" = 1 ] && { nocache=(--no-cache); image_cached="--no-cache"; }
t0=$SECONDS
"${PC[@]}" build "${nocache[@]}" worker >"$OUT/build-1.log" 2>&1 || { tail -n 40 "$OUT/build-1.log" >&2; fail "image build"; }
note "app image build ($image_cached): $((SECONDS - t0))s"

if [ "${SKIP_WARM_BUILD:-0}" != 1 ]; then
    # A source change, on a scratch copy of the build context (the work tree
    # is not touched): only the COPY and `pip install --no-deps` layers rerun.
    ctx=$OUT/rebuild-ctx
    rm -rf "$ctx"; mkdir -p "$ctx"
    git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$ctx" -xf -
    printf '\n# rebuild probe %s\n' "$(date +%s)" >>"$ctx/core/__init__.py"
    secret=()
    [ -n "$EXTRA_CA_FILE" ] && secret=(--secret "id=extra_ca,src=$EXTRA_CA_FILE")
    t0=$SECONDS
    podman build "${secret[@]}" --build-arg TF_VARIANT=$TF_VARIANT -t localhost/keras-trainer:rebuild-probe "$ctx" \
        >"$OUT/build-warm.log" 2>&1 || { tail -n 40 "$OUT/build-warm.log" >&2; fail "warm rebuild"; }
    warm=$((SECONDS - t0))
    steps=$(grep -c -- '^STEP ' "$OUT/build-warm.log" || true)
    cached=$(grep -c -- '^--> Using cache' "$OUT/build-warm.log" || true)
    note "warm rebuild after a source change: ${warm}s ($cached of $steps steps from cache)"
    podman rmi localhost/keras-trainer:rebuild-probe >/dev/null 2>&1 || true
    rm -rf "$ctx"
fi

# ---------------------------------------------------------------- 4. README's quick start
QS=$OUT/quickstart
rm -rf "$QS"; mkdir -p "$QS"
git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$QS" -xf -
rm -f "$QS/.env"
block=$(awk '/<!-- quick-start:compose -->/ {on=1; next} on && /^```sh/ {next} on && /^```/ {exit} on' README.md)
[ -n "$block" ] || fail "README.md has no block after <!-- quick-start:compose -->"
printf '%s\n' "$block" >"$OUT/quickstart.sh"
block=${block//localhost:8000/127.0.0.1:$API_PORT}

# `docker compose ARGS` as the quick start types it -> podman-compose ARGS.
docker() {
    [ "${1:-}" = compose ] || fail "the quick start runs 'docker ${1:-}': only 'docker compose' is mapped"
    shift
    local args=() wait=0 a
    for a in "$@"; do
        if [ "$a" = --wait ]; then wait=1; else args+=("$a"); fi
    done
    "$VENV/bin/podman-compose" -p "$PROJECT" "${QS_FILES[@]}" "${args[@]}" || return
    if [ $wait = 1 ]; then
        wait_healthy 300 postgres redis api worker flower >&2 || fail "--wait: not every service became healthy"
    fi
}

start_ticker
t_up=$SECONDS
say "README quick start (in $QS):"; sed 's/^/    /' "$OUT/quickstart.sh" >&2
cd "$QS"
TOKEN=
QS_RUNNING=1   # errexit stays on inside the block: its first failing line fails the test
eval "$block" >"$OUT/quickstart.log" 2>&1
QS_RUNNING=0
cd "$ROOT"
note "README quick start ($(grep -c . "$OUT/quickstart.sh") lines) done in $((SECONDS - t_up))s: every service healthy, a token made, curl answered"
[ -n "$TOKEN" ] || fail "the quick start made no TOKEN"
export TRAINER_TOKEN=$TOKEN
"${CLIENT[@]}" wait-ready --timeout 120
"${CLIENT[@]}" check-auth || fail "auth defaults"
podman logs "$(ctr_of api)" 2>&1 | grep "python -m core.tokens create OWNER" >/dev/null \
    || fail "the api's log does not say how to create a token"
note "no token and the formerly shipped 'change-me' -> 401; the api's log says how to create a token"
mem=$(podman inspect "$(ctr_of worker)" --format '{{.HostConfig.Memory}}')
[ "$mem" = $((8 * 1024 * 1024 * 1024)) ] || fail "worker memory limit is $mem, not 8g"
note "worker memory limit: $mem bytes"
curl -fsS "http://127.0.0.1:$FLOWER_PORT/healthcheck" >/dev/null || fail "flower not answering on 127.0.0.1:$FLOWER_PORT"

# ---------------------------------------------------------------- 5. smoke job
"${CLIENT[@]}" smoke --out "$OUT" >"$OUT/smoke.json" || fail "smoke job"
note "first job succeeded at +$((SECONDS - t_up))s after compose up: $(cat "$OUT/smoke.json" | cut -c1-400)"

# ---------------------------------------------------------------- 6. worker restart
job=$("${CLIENT[@]}" submit-long --epochs "${LONG_EPOCHS:-150}" --batch-size "${LONG_BATCH:-2}")
st=$("${CLIENT[@]}" wait-status "$job" running --timeout 120)
[ "$st" = running ] || fail "long job $job never ran (status $st); make it longer with LONG_EPOCHS"
sleep 3
worker=$(ctr_of worker)
t0=$SECONDS
# as `docker compose restart worker` does: SIGTERM, SIGKILL after the stop_grace_period (30 s)
(cd "$QS" && "$VENV/bin/podman-compose" -p "$PROJECT" "${QS_FILES[@]}" restart worker) >"$OUT/restart.log" 2>&1 \
    || fail "compose restart worker"
note "compose restart worker ($worker) while job $job was running: $((SECONDS - t0))s (the stop grace period is 30 s)"
t0=$SECONDS
"${CLIENT[@]}" wait-terminal "$job" --timeout "$RESTART_TIMEOUT" >"$OUT/restart.json" || fail "job $job stuck after the worker restart"
note "after the restart job $job ended in $((SECONDS - t0))s: $(cat "$OUT/restart.json")"
"${CLIENT[@]}" check-resumed "$job" >"$OUT/resumed.json" || fail "job $job was not resumed from its checkpoint"
note "resumed from the hand-back's checkpoint, every epoch trained once: $(cat "$OUT/resumed.json")"
wait_healthy 180 worker || fail "worker not healthy again after the restart"

# ---------------------------------------------------------------- 7. scale-out
if [ "${SKIP_SCALE:-0}" != 1 ]; then
    SCALE=("${CLIENT[@]}")
    "${SCALE[@]}" submit-batch --jobs "${SCALE_JOBS:-20}" --epochs "${SCALE_EPOCHS:-40}" >"$OUT/batch-1.ids" || fail "submit batch 1"
    "${SCALE[@]}" wait-batch "$OUT/batch-1.ids" >"$OUT/batch-1.json" || fail "batch on one worker"
    note "one worker: $(cat "$OUT/batch-1.json")"
    t0=$SECONDS
    (cd "$QS" && "$VENV/bin/podman-compose" -p "$PROJECT" "${QS_FILES[@]}" up -d --no-recreate --scale worker=2) \
        >"$OUT/scale.log" 2>&1 || fail "up --scale worker=2"
    workers=$(podman ps --format '{{.Names}}' --filter "label=io.podman.compose.project=$PROJECT" \
        --filter "label=io.podman.compose.service=worker" | sort)
    [ "$(echo "$workers" | wc -l)" = 2 ] || fail "expected two worker containers, found: $workers"
    deadline=$((SECONDS + 180))
    for w in $workers; do
        until [ "$(health_of "$w")" = healthy ]; do
            [ $SECONDS -lt $deadline ] || fail "worker $w not healthy"
            sleep 2
        done
    done
    note "scaled to two workers ($(echo "$workers" | tr '\n' ' ')) in $((SECONDS - t0))s"
    "${SCALE[@]}" submit-batch --jobs "${SCALE_JOBS:-20}" --epochs "${SCALE_EPOCHS:-40}" >"$OUT/batch-2.ids" || fail "submit batch 2"
    second=$(echo "$workers" | tail -n1)
    sleep "${SCALE_RESTART_AFTER_S:-15}"
    podman restart -t 30 "$second" >/dev/null || fail "restart $second"
    note "restarted $second in the middle of the two-worker batch"
    "${SCALE[@]}" wait-batch "$OUT/batch-2.ids" >"$OUT/batch-2.json" || fail "batch on two workers"
    note "two workers, one restarted mid-run: $(cat "$OUT/batch-2.json")"
    one=$(sed 's/.*"wall_s": \([0-9.]*\).*/\1/' "$OUT/batch-1.json")
    two=$(sed 's/.*"wall_s": \([0-9.]*\).*/\1/' "$OUT/batch-2.json")
    note "scale-out: ${SCALE_JOBS:-20} jobs in ${one}s on one worker, ${two}s on two (ratio $(awk "BEGIN {printf \"%.2f\", $two / $one}"))"
fi

# ---------------------------------------------------------------- sizes
note "images: $(podman images --format '{{.Repository}}:{{.Tag}}={{.Size}}' | grep -v '<none>' | tr '\n' ' ')"
note "app image layers: $(podman history "localhost/keras-trainer:$TF_VARIANT" --format '{{.Size}}' | grep -v '^0 B' | tr '\n' ' ')"
