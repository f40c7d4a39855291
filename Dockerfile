# vlmchallenge: training, evaluation and serving in one image (docs/serving.md §4).
#   docker build -t vlmchallenge .
#   docker run --rm -p 8000:8000 -v $PWD/outputs/train/runs/<time>/export:/models/export:ro vlmchallenge
#   docker run --rm vlmchallenge python -m vlmchallenge.train                       # offline default, CPU
# The default command serves the export mounted at /models/export on 0.0.0.0:8000; `docker stop` (SIGTERM)
# shuts it down gracefully. (Not built in CI: the build machines have no Docker engine.)
# curl: webdataset streams http(s):// shards through it (docs/scaling.md §2); the HEALTHCHECK uses it too
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PROJECT_ROOT=/app
RUN apt-get update && apt-get install -y --no-install-recommends make curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY vlmchallenge ./vlmchallenge
COPY conf ./conf
RUN pip install --upgrade pip && pip install .
COPY . .
# an unprivileged user; it owns /app so runs can write outputs/ (and Hydra its run folders) there
RUN useradd --system --uid 10001 --create-home app && mkdir -p /app/outputs /models && chown -R app /app
USER app
EXPOSE 8000
# /health needs the API key when one is set; it is 200 only once every inference worker has loaded the model; loading takes a while
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD curl --fail --silent --max-time 4 -H "X-API-Key: ${VLMCHALLENGE_API_KEY:-}" http://127.0.0.1:8000/health || exit 1
# exec form: the server is PID 1 and receives docker stop's SIGTERM itself
CMD ["python", "-m", "vlmchallenge.serve", "export_dir=/models/export", "host=0.0.0.0"]
