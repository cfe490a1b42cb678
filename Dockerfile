# syntax=docker/dockerfile:1
# The gateway image: built in one stage, run in a slim one as an unprivileged user.
#   docker build -t llm-gateway .
#   docker run -p 8000:8000 -e GATEWAY_ENV=production -e DATABASE_URL=... llm-gateway
# .dockerignore keeps the local virtualenv, data directories (databases, generated
# secrets), .git and benchmark results out of the build context.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gateway
WORKDIR /src
# Only what the package is built from (pyproject's packages, and the README it names).
COPY pyproject.toml README.md ./
COPY gateway gateway
COPY providers providers
COPY storage storage
COPY webui webui
RUN /opt/gateway/bin/pip install --no-cache-dir '.[postgres,redis]'

FROM python:3.11-slim
# The same base image: the virtualenv's interpreter links stay valid once copied.
RUN useradd --system --user-group --uid 10001 --home-dir /var/lib/gateway --create-home gateway \
    && install -d -o gateway -g gateway -m 0700 /var/lib/gateway/data
COPY --from=build /opt/gateway /opt/gateway
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_DATA_DIR=/var/lib/gateway/data \
    GATEWAY_LOG_FORMAT=json
USER gateway
WORKDIR /var/lib/gateway
EXPOSE 8000
# /ready answers 200 once the database (and Redis, when configured) answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GATEWAY_PORT', '8000') + '/ready', timeout=4)"]
# Host, port and workers come from GATEWAY_HOST, GATEWAY_PORT and GATEWAY_WORKERS.
CMD ["gateway", "serve", "--access-log"]
