# OptiFlow image (README "Run it on a server"): the bot and its CLI, data in the /data volume.
# Build: docker build -t optiflow .    Run: docker compose up -d
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OPTIFLOW_DB_PATH=/data/optiflow.db \
    OPTIFLOW_DATA_DIR=/opt/optiflow/data \
    OPTIFLOW_OUTPUT_DIR=/data/out

RUN useradd --system --create-home --home-dir /home/optiflow --uid 10001 optiflow \
    && mkdir -p /data && chown optiflow:optiflow /data

WORKDIR /opt/optiflow
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY keyboards ./keyboards
COPY storage ./storage
COPY trading ./trading
COPY data ./data
COPY examples ./examples
RUN pip install --no-cache-dir . \
    && optiflow --help > /dev/null

USER optiflow
VOLUME ["/data"]
WORKDIR /data

# Healthy while the bot's event loop beats (the heartbeat file beside the database).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["optiflow", "health", "--max-age", "90"]

# SIGTERM (docker stop) runs the graceful L-2 shutdown; give it time (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["optiflow"]
CMD ["run"]
