# vlmchallenge: training, evaluation and serving in one image.
#   docker build -t vlmchallenge .
#   docker run --rm vlmchallenge python -m vlmchallenge.train                       # offline default, CPU
#   docker run --rm -p 8000:8000 -v $PWD/outputs:/app/outputs vlmchallenge \
#       python -m vlmchallenge.serve export_dir=outputs/train/runs/<time>/export host=0.0.0.0
# (Not built in CI: the build machines have no Docker engine.)
# curl: webdataset streams http(s):// shards through it (docs/scaling.md §2)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PROJECT_ROOT=/app
RUN apt-get update && apt-get install -y --no-install-recommends make curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY vlmchallenge ./vlmchallenge
COPY conf ./conf
RUN pip install --upgrade pip && pip install .
COPY . .
EXPOSE 8000
CMD ["python", "-m", "vlmchallenge.serve", "--help"]
