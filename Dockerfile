# Mirrors the README's install command; the install script does the work.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN scripts/install
ENV GATEWAY_SERVER__HOST=0.0.0.0 GATEWAY_SERVER__ALLOW_ANONYMOUS=false HF_HUB_OFFLINE=1
EXPOSE 8080
CMD [".venv/bin/gateway", "serve"]
