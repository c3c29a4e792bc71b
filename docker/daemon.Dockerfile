# syntax=docker/dockerfile:1
# The AsymCache cache daemon (`asymcache serve`): small and torch-free.
#
# Build from the repository root:  docker build -f docker/daemon.Dockerfile -t asymcache-daemon .
# Run:  docker run --shm-size 3g -v asymcache-data:/var/lib/asymcache asymcache-daemon
# Configuration: /etc/asymcache/daemon.toml < ASYMCACHE_DAEMON_* variables < flags after `serve`.

ARG PYTHON_VERSION=3.11

# ---- build: one wheel of the project (no dependencies) --------------------------------------
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cacheserver cacheserver
COPY tiers tiers
COPY engine engine
COPY kernels kernels
COPY ops ops
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime: the wheel with the daemon's dependencies only (no [engine] extra; [remote] is
# redis-py, for the remote tier on a Redis Cluster) -------------------------------------------
FROM python:${PYTHON_VERSION}-slim
ARG ASYMCACHE_UID=10001
RUN useradd --system --uid "${ASYMCACHE_UID}" --user-group --no-create-home \
        --home-dir /var/lib/asymcache --shell /usr/sbin/nologin asymcache \
    && mkdir -p /var/lib/asymcache /run/asymcache /etc/asymcache \
    && chown asymcache:asymcache /var/lib/asymcache /run/asymcache
# The dependency versions the test suite last passed with (README, "Dependencies").
COPY .ci/constraints.txt /etc/asymcache/constraints.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir -c /etc/asymcache/constraints.txt "$(echo /wheels/*.whl)[remote]" \
    && rm -rf /wheels \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"
COPY docker/daemon.toml /etc/asymcache/daemon.toml
COPY docker/healthcheck.py /usr/local/bin/asymcache-healthcheck

ENV PYTHONUNBUFFERED=1
USER asymcache
WORKDIR /var/lib/asymcache
EXPOSE 9465
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python /usr/local/bin/asymcache-healthcheck \
        "http://127.0.0.1:${ASYMCACHE_DAEMON_METRICS_PORT:-9465}/healthz"
ENTRYPOINT ["asymcache"]
CMD ["serve", "--config", "/etc/asymcache/daemon.toml"]
