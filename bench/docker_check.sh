#!/usr/bin/env bash
# `make docker-check`: build the Docker image with a real engine, serve an export with it, and check what
# docs/serving.md §4 promises. One PASS/FAIL line per step; exit status non-zero when a step fails.
#   bench/docker_check.sh                      # trains a tiny 1-epoch export inside the image, serves it
#   EXPORT_DIR=outputs/train/runs/<time>/export bench/docker_check.sh
# No Docker engine answering (`docker info` fails, as on most CI machines): one line saying why, exit 0.
# Steps: base image -> build -> export, readable by the image's user -> /health 200 without the API key (and Docker's HEALTHCHECK `healthy`)
# -> /predict 200 with the key, 401 without -> `docker stop` while requests are in flight: each answered 200,
# the container exits 0, no traceback in its log.
# Settings (environment):
#   BASE_IMAGE       the Dockerfile's BASE_IMAGE; unset: python:3.11-slim if it can be pulled, else a local
#                    Debian bookworm base, LOCAL_BASE, built from Debian's packages (mmdebstrap, docker import)
#                    unless that image exists already
#   LOCAL_BASE       default vlmchallenge-base:bookworm; DEBIAN_MIRROR default http://deb.debian.org/debian
#   HOST_CA_BUNDLE   a PEM bundle the local base trusts (update-ca-certificates); default: this machine's
#                    /etc/ssl/certs/ca-certificates.crt, so that a network that intercepts TLS with its own CA
#                    (as this project's build machines do) still lets pip reach PyPI from the build
#   LOCAL_PIP_INDEX  1 (default): every file://<dir>/simple index in this machine's pip configuration is served
#                    on loopback during the build and handed to pip as an extra index (see the build step)
#   IMAGE            default vlmchallenge:check (left in place: the next build reuses its layers)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
IMAGE=${IMAGE:-vlmchallenge:check}
LOCAL_BASE=${LOCAL_BASE:-vlmchallenge-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOCAL_PIP_INDEX=${LOCAL_PIP_INDEX:-1}
API_KEY=docker-check-key
FAILED=0
PIDS=()
CID=""

if ! err=$(docker info --format '{{.ServerVersion}}' 2>&1); then
    echo "docker-check: skipped: no Docker engine answers ('docker info': $(echo "$err" | tr '\n' ' ' | cut -c1-200))"
    exit 0
fi
echo "docker-check: Docker engine $err"

WORK=$(mktemp -d /tmp/docker-check.XXXXXX)
cleanup() {
    [ -n "$CID" ] && docker rm -f "$CID" >/dev/null 2>&1
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    # the export trained in the image belongs to this user (docker run -u); the rest is ours too
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { # step NAME STATUS MILLISECONDS [DETAIL]
    printf '%-5s %-37s %5d.%ds  %s\n' "$2" "$1" $(($3 / 1000)) $(($3 % 1000 / 100)) "${4:-}"
    [ "$2" = PASS ] || FAILED=1
}
now() { echo $(($(date +%s%N) / 1000000)); }
fail_out() { step "$1" FAIL "$2" "$3"; echo "docker-check: FAIL (stopped after '$1')"; exit 1; }

# ---------------------------------------------------------------- base image
t0=$(now)
if [ -z "${BASE_IMAGE:-}" ]; then
    if docker image inspect python:3.11-slim >/dev/null 2>&1 || pull=$(docker pull -q python:3.11-slim 2>&1); then
        BASE_IMAGE=python:3.11-slim
    else
        echo "docker-check: python:3.11-slim can't be pulled: $(echo "$pull" | tail -1)"
        BASE_IMAGE=$LOCAL_BASE
        if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
            command -v mmdebstrap >/dev/null || fail_out "base $LOCAL_BASE" $(($(now) - t0)) \
                "mmdebstrap not found (apt-get install mmdebstrap) and no $LOCAL_BASE image"
            CA=${HOST_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
            hooks=()
            if [ -n "$CA" ] && [ -f "$CA" ]; then
                hooks=(--customize-hook="upload $CA /usr/local/share/ca-certificates/host-ca-bundle.crt"
                    --customize-hook='chroot "$1" update-ca-certificates')
            fi
            # minbase: Essential + apt; python3.11 with venv (ensurepip), curl and make for the image's RUN lines
            suite=bookworm security=${DEBIAN_MIRROR%/debian}/debian-security
            if ! mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,curl,make \
                --aptopt='Acquire::Languages "none"' --dpkgopt='path-exclude=/usr/share/doc/*' \
                --dpkgopt='path-exclude=/usr/share/man/*' "${hooks[@]}" "$suite" "$WORK/rootfs.tar" \
                "deb $DEBIAN_MIRROR $suite main" "deb $DEBIAN_MIRROR $suite-updates main" \
                "deb $security $suite-security main" >"$WORK/mmdebstrap.log" 2>&1 ||
                ! docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' "$WORK/rootfs.tar" "$LOCAL_BASE" \
                    >/dev/null; then
                tail -5 "$WORK/mmdebstrap.log"
                fail_out "base $LOCAL_BASE" $(($(now) - t0)) "mmdebstrap or docker import failed (above)"
            fi
            rm -f "$WORK/rootfs.tar"
        fi
    fi
fi
step "base $BASE_IMAGE" PASS $(($(now) - t0)) "$(docker run --rm "$BASE_IMAGE" python3 --version 2>&1)"

# ---------------------------------------------------------------- build
# The context is the checkout's files that git tracks or would track (`git ls-files -co --exclude-standard`),
# not the folder: .venv (GBs), data/ and outputs/ stay out of it.
# torch: the project pins torch==2.14.1, whose Linux x86_64 wheel on PyPI is the CUDA build (its wheel and the
# nvidia-* libraries: several GB); PyPI has no CPU-only build of it (those are on download.pytorch.org, which
# this project's machines can't reach, and a CPU build would not be the image users get). Where this machine's
# pip is configured with local file:// indexes holding those very wheels (the project's build machines have
# /opt/pypi*), each is served on loopback and passed as PIP_EXTRA_INDEX_URL, so pip takes the large wheels from
# disk, exactly as the host's own `pip install` does, and the rest from PyPI; `--network host` lets the build
# reach loopback (and Debian's and PyPI's servers). The image is the same as one built from PyPI alone.
t0=$(now)
CTX=$WORK/context
mkdir -p "$CTX"
git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$CTX"
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
if [ "$LOCAL_PIP_INDEX" = 1 ] && command -v python3 >/dev/null; then
    extra=""
    port=18470
    for url in $(python3 -m pip config get global.extra-index-url 2>/dev/null) \
        $(python3 -m pip config get global.index-url 2>/dev/null); do
        case $url in file://*/simple | file://*/simple/) ;; *) continue ;; esac
        dir=${url#file://}
        dir=${dir%/}
        dir=${dir%/simple}
        [ -d "$dir/simple" ] || continue
        port=$((port + 1))
        python3 -m http.server "$port" --bind 127.0.0.1 --directory "$dir" >/dev/null 2>&1 &
        PIDS+=($!)
        extra="$extra http://127.0.0.1:$port/simple"
    done
    if [ -n "$extra" ]; then
        sleep 1
        build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=${extra# }" --build-arg PIP_TRUSTED_HOST=127.0.0.1)
        echo "docker-check: pip's local indexes served to the build:$extra"
    fi
fi
old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null)
if docker build --network host "${build_args[@]}" -t "$IMAGE" "$CTX" >"$WORK/build.log" 2>&1; then
    # the image this build replaced, untagged now: removed, with its layers that nothing else uses
    [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ] &&
        docker rmi "$old_id" >/dev/null 2>&1
    step "build $IMAGE" PASS $(($(now) - t0)) "$(docker image inspect -f '{{.Size}}' "$IMAGE" |
        awk '{printf "%.2f GB", $1 / 1e9}')"
else
    tail -20 "$WORK/build.log"
    fail_out "build $IMAGE" $(($(now) - t0)) "docker build failed (log tail above)"
fi
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
PIDS=()

# ---------------------------------------------------------------- an export
t0=$(now)
if [ -n "${EXPORT_DIR:-}" ]; then
    EXPORT=$(cd "$EXPORT_DIR" && pwd) || fail_out "export" 0 "EXPORT_DIR=$EXPORT_DIR is not a folder"
    step "export (EXPORT_DIR)" PASS 0 "$EXPORT"
else
    # the image's own training entry point, as this user (its files stay removable here), with the test
    # suite's tiny 1-epoch settings (TINY_TRAIN_OVERRIDES in tests/helpers/runs.py: the default 1-epoch run
    # takes ~16 min on 2 busy cores, this one about a minute); data, logs and HOME in the container's /tmp,
    # only the run folder (with export/) on the mount
    mkdir -p "$WORK/train"
    if docker run --rm -u "$(id -u):$(id -g)" -e HOME=/tmp -v "$WORK/train:/out" "$IMAGE" \
        python -m vlmchallenge.train 'data.synthetic.users=[U9001,U9002,U9003]' \
        data.synthetic.boxes_per_session=1 data.synthetic.width=112 data.synthetic.height=84 \
        'data.splits.train=[U9001]' 'data.splits.val=[U9002]' 'data.splits.test=[U9003]' data.clips.stride_s=2.0 \
        data.sampler.max_pixels=6272 data.shards.workers=1 dataloader.num_workers=0 dataloader.batch_size=4 \
        trainer.accelerator=cpu trainer.max_epochs=1 trainer.limit_train_batches=4 trainer.limit_val_batches=2 \
        trainer.limit_test_batches=2 '~callbacks.rich_progress_bar' logger=csv \
        paths.data_dir=/tmp/data paths.log_dir=/tmp/outputs hydra.run.dir=/out/run >"$WORK/train.log" 2>&1 &&
        [ -d "$WORK/train/run/export" ]; then
        EXPORT=$WORK/train/run/export
        step "export (tiny 1-epoch train in image)" PASS $(($(now) - t0)) "$(ls "$EXPORT" | tr '\n' ' ')"
    else
        tail -20 "$WORK/train.log"
        fail_out "export (tiny 1-epoch train in image)" $(($(now) - t0)) "training in the image failed (above)"
    fi
fi
# The server runs as the image's user (uid 10001) and must read the mounted export, whoever wrote it: what
# that user can't read (`find ! -readable`, run as that user, over the read-only mount the docs show).
# safetensors' save_file writes model.safetensors with mode 0600, and safe_open then says "No such file or
# directory". If so: FAIL, and the next steps serve a world-readable copy, so that they are still checked.
t0=$(now)
unreadable=$(docker run --rm -v "$EXPORT:/models/export:ro" "$IMAGE" find /models/export ! -readable 2>&1 |
    sed 's|^/models/export/||' | tr '\n' ' ')
if [ -z "$unreadable" ]; then
    step "export readable by the image's user" PASS $(($(now) - t0))
else
    step "export readable by the image's user" FAIL $(($(now) - t0)) \
        "uid 10001 can't read: $unreadable(the steps below use a chmod a+rX copy)"
    cp -r "$EXPORT" "$WORK/export-readable" && chmod -R a+rX "$WORK/export-readable"
    EXPORT=$WORK/export-readable
fi

# ---------------------------------------------------------------- serve: /health
t0=$(now)
CID=$(docker run -d -p 127.0.0.1::8000 -e VLMCHALLENGE_API_KEY=$API_KEY -v "$EXPORT:/models/export:ro" "$IMAGE")
URL=http://$(docker port "$CID" 8000/tcp | head -1)
code=000
for _ in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 4 "$URL/health") || true
    [ "$code" = 200 ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$CID")" = true ] || break
    sleep 0.5
done
if [ "$code" = 200 ]; then
    step "/health 200 without the key" PASS $(($(now) - t0)) "$URL"
else
    docker logs "$CID" 2>&1 | tail -20
    fail_out "/health 200 without the key" $(($(now) - t0)) "last status $code"
fi
t0=$(now)
health=starting
for _ in $(seq 1 75); do # the HEALTHCHECK runs every 30 s: one run after /health is 200 turns it healthy
    health=$(docker inspect -f '{{.State.Health.Status}}' "$CID")
    [ "$health" = healthy ] && break
    sleep 1
done
[ "$health" = healthy ] && st=PASS || st=FAIL
step "HEALTHCHECK (no key sent)" $st $(($(now) - t0)) "$health"

# ---------------------------------------------------------------- /predict
# request bodies, made by the image's own Python (Pillow): a small clip, and a heavier request for the stop
# step (4 clips of 16 full-HD PNG frames: about 2 s of decoding and inference on 2 busy cores)
docker run --rm -i -u "$(id -u):$(id -g)" -v "$WORK:/w" "$IMAGE" python - >"$WORK/bodies.log" 2>&1 <<'EOF' ||
import base64, io, json
import numpy as np
from PIL import Image
def png(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
small = [png(np.full((84, 112, 3), 40 * i)) for i in range(4)]
y, x = np.mgrid[0:1080, 0:1920]
big = [png(np.stack([(x // 8 + 40 * i) % 256, (y // 8) % 256, ((x + y) // 16) % 256], -1)) for i in range(16)]
json.dump({"frames": small}, open("/w/small.json", "w"))
json.dump({"clips": [{"frames": big} for _ in range(4)]}, open("/w/big.json", "w"))
EOF
    { cat "$WORK/bodies.log"; fail_out "request bodies" 0 "could not make them in the image"; }
post() { # post BODY [KEY] -> status code; answer in $WORK/answer.json
    curl -s -o "$WORK/answer.json" -w '%{http_code}' --max-time 120 -H 'Content-Type: application/json' -H 'Expect:' \
        ${2:+-H "X-API-Key: $2"} --data-binary "@$WORK/$1.json" "$URL/predict"
}
t0=$(now)
code=$(post small $API_KEY)
label=$(grep -o '"label": *"[^"]*"' "$WORK/answer.json" | head -1 | cut -d'"' -f4)
[ "$code" = 200 ] && [ -n "$label" ] && st=PASS || st=FAIL
step "/predict 200 with the key" $st $(($(now) - t0)) "status $code, label '$label'"
t0=$(now)
code=$(post small)
[ "$code" = 401 ] && st=PASS || st=FAIL
step "/predict 401 without the key" $st $(($(now) - t0)) "status $code"
t0=$(now)
code=$(post big $API_KEY)
[ "$code" = 200 ] && st=PASS || st=FAIL
step "/predict 4 clips of 1080p frames" $st $(($(now) - t0)) "status $code, $(($(stat -c %s "$WORK/big.json") / 1000)) kB"

# ---------------------------------------------------------------- docker stop with requests in flight
# `docker stop -t 30`: the server gives in-flight requests 30 s (uvicorn's timeout_graceful_shutdown, §2),
# then stops its inference workers one after the other. Docker's default is SIGKILL 10 s after SIGTERM, and
# on 2 busy cores the whole shutdown took 6.9-10.9 s here with these requests (8 s with none): a NOTE line
# says when it took longer than 10 s, i.e. when a plain `docker stop` would have killed it.
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
t0=$(now)
N=2
for i in $(seq 1 $N); do
    { curl -s -o "$WORK/inflight$i.json" -w '%{http_code}\n' --max-time 120 -H 'Content-Type: application/json' \
        -H 'Expect:' -H "X-API-Key: $API_KEY" --data-binary "@$WORK/big.json" "$URL/predict" >"$WORK/inflight$i.code"
        now >"$WORK/inflight$i.done"; } &
    PIDS+=($!)
done
inside=0
for _ in $(seq 1 100); do # until the server holds them (admission's count, on every GET's answer)
    inside=$(curl -s -D - -o /dev/null --max-time 4 "$URL/health" | tr -d '\r' |
        awk -F': ' 'tolower($1) == "x-requests-in-server" {print $2}')
    [ "${inside:-0}" -ge $N ] && break
    sleep 0.1
done
s0=$(now)
docker stop -t "$STOP_TIMEOUT" "$CID" >/dev/null # SIGTERM, then SIGKILL after STOP_TIMEOUT s
stop_ms=$(($(now) - s0))
wait "${PIDS[@]}" 2>/dev/null
PIDS=()
codes=$(cat "$WORK"/inflight*.code | tr '\n' ' ')
answered_ms=$(($(cat "$WORK"/inflight*.done | sort -n | tail -1) - s0))
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$CID")
docker logs "$CID" >"$WORK/server.log" 2>&1
tb=$(grep -c Traceback "$WORK/server.log")
ok=1
[ "${inside:-0}" -ge 1 ] || ok=0
for c in $codes; do [ "$c" = 200 ] || ok=0; done
answered=$(grep -l '"predictions"' "$WORK"/inflight*.json 2>/dev/null | wc -l)
[ "$answered" = $N ] || ok=0
[ "$exit_code" = 0 ] && [ "$tb" = 0 ] || ok=0
[ $ok = 1 ] && st=PASS || st=FAIL
step "docker stop, requests in flight" $st $(($(now) - t0)) \
    "${inside:-0} in server at SIGTERM; answers: $codes($answered with predictions) by +${answered_ms} ms; exited at +${stop_ms} ms, code $exit_code; tracebacks $tb"
[ $stop_ms -le 10000 ] || echo "NOTE  the shutdown took ${stop_ms} ms: a plain \`docker stop\` (SIGKILL after 10 s) would have killed it"
[ $ok = 1 ] || tail -30 "$WORK/server.log"
docker rm "$CID" >/dev/null && CID=""

if [ $FAILED = 0 ]; then echo "docker-check: PASS"; else echo "docker-check: FAIL"; fi
exit $FAILED
