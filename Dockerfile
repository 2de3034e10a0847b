# Vantum server image: slim, non-root, the embedded engines included (pocketsphinx's
# model and eSpeak NG ship inside their wheels), healthcheck on /health (503 while
# draining). docs/deploy.md says how to run it; deploy/ has compose and Kubernetes.
#
#   docker build -t vantum .
#   docker run -p 8000:8000 -e VANTUM_AUTH_SECRET=... vantum
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/vantum
COPY pyproject.toml README.md ./
COPY vantum ./vantum
# psycopg for PostgreSQL call records; the rest are the server's own dependencies.
RUN /opt/vantum/bin/pip install --no-cache-dir ".[postgres]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/vantum --create-home vantum
COPY --from=build /opt/vantum /opt/vantum
ENV PATH=/opt/vantum/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VANTUM_HOST=0.0.0.0 \
    VANTUM_PORT=8000 \
    VANTUM_LOG_FORMAT=json \
    VANTUM_RECORDS_URL=sqlite:////var/lib/vantum/calls.db
USER vantum
WORKDIR /var/lib/vantum
EXPOSE 8000
# /health answers 200 while serving, 503 while draining (then the container is on its way out).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('VANTUM_PORT', '8000')}/health\", timeout=2); sys.exit(0)"]
# SIGTERM drains (VANTUM_GRACEFUL_TIMEOUT); give `docker stop -t` at least that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["vantum", "serve"]
