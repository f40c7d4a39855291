# vlmchallenge: training, evaluation and serving in one image (docs/serving.md §4).
#   docker build -t vlmchallenge .
#   docker run --rm --stop-timeout 30 -p 8000:8000 -v $PWD/outputs/train/runs/<time>/export:/models/export:ro vlmchallenge
#   docker run --rm vlmchallenge python -m vlmchallenge.train                       # offline default, CPU
# The default command serves the export mounted at /models/export on 0.0.0.0:8000; `docker stop` (SIGTERM)
# shuts it down gracefully. `make docker-check` (bench/docker_check.sh) builds this image, serves an export
# with it, checks /health and /predict and a `docker stop` with a request in flight; CI (.ci/run) runs it and
# it skips itself, saying why, where no Docker engine answers.
#
# BASE_IMAGE: any image with Python 3.11 and its venv module; the default is the public one. Where Docker Hub
# can't be reached, build a Debian bookworm base from Debian's own packages (mmdebstrap + docker import, see
# docs/serving.md §4) and pass `--build-arg BASE_IMAGE=vlmchallenge-base:bookworm`.
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_TRUSTED_HOST: optional, read by pip during the build only (build
# arguments, not ENV: nothing of them stays in the running container's environment). bench/docker_check.sh uses
# them to hand pip a machine's local copy of the large wheels (torch 2.14.1, its CUDA libraries) over loopback,
# with `docker build --network host`, instead of downloading them again; unset, pip uses PyPI.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST

# The packages go into a venv at /opt/venv, first on PATH: the same on python:3.11-slim and on a Debian base,
# whose system Python refuses `pip install` (PEP 668, https://peps.python.org/pep-0668/) and has no `python`.
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PROJECT_ROOT=/app \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# curl: webdataset streams http(s):// shards through it (docs/scaling.md §2); the HEALTHCHECK uses it too
RUN apt-get update && apt-get install -y --no-install-recommends make curl && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml ./
# the dependencies (several GB) in a layer of their own, which only pyproject.toml invalidates: an empty package
# and README stand in for the code (https://docs.docker.com/build/cache/); then the code, without dependencies
RUN mkdir vlmchallenge && touch README.md vlmchallenge/__init__.py && pip install --upgrade pip && pip install . \
    && pip uninstall -y vlmchallenge && rm -rf README.md vlmchallenge build vlmchallenge.egg-info
COPY README.md ./
COPY vlmchallenge ./vlmchallenge
COPY conf ./conf
RUN pip install --no-deps . && rm -rf build vlmchallenge.egg-info
COPY . .
# an unprivileged user; it owns /app so runs can write outputs/ (and Hydra its run folders) there
RUN useradd --system --uid 10001 --create-home app && mkdir -p /app/outputs /models && chown -R app /app
USER app
EXPOSE 8000
# /health needs no API key (the key guards the predict routes only: tests/test_serving.py polls it without one
# on a server that has a key); it is 200 only once every inference worker has loaded the model, 503 before.
# Loading took 78-193 s on 2 busy cores (make docker-check), hence the start period, in which failures don't
# count (the first success makes it healthy at once: https://docs.docker.com/reference/dockerfile/#healthcheck).
# `docker stop` waits 10 s before SIGKILL; the server gives in-flight requests up to 30 s: run with
# `--stop-timeout 30` (docs/serving.md §4)
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD curl --fail --silent --max-time 4 http://127.0.0.1:8000/health || exit 1
# exec form: the server is PID 1 and receives docker stop's SIGTERM itself
CMD ["python", "-m", "vlmchallenge.serve", "export_dir=/models/export", "host=0.0.0.0"]
