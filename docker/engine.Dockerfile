# syntax=docker/dockerfile:1
# The AsymCache inference engine (`asymcache engine`): OpenAI API, /health, /metrics.
#
# Build from the repository root, one image per variant:
#   docker build -f docker/engine.Dockerfile --build-arg VARIANT=cpu  -t asymcache-engine:cpu .
#   docker build -f docker/engine.Dockerfile --build-arg VARIANT=cuda -t asymcache-engine:cuda .
# VARIANT=cpu installs torch's CPU-only build; VARIANT=cuda installs the standard Linux build,
# which brings its CUDA runtime libraries (the host needs an NVIDIA driver and the NVIDIA
# Container Toolkit), plus a C compiler that Triton uses to build its kernel launcher.
# TORCH_INDEX_URL overrides the package index torch comes from (e.g. a mirror, or another CUDA
# build of the same version).

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

# ---- runtime ---------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
ARG ASYMCACHE_UID=10001
RUN case "${VARIANT}" in cpu|cuda) ;; \
        *) echo "VARIANT must be cpu or cuda, got '${VARIANT}'" >&2; exit 1 ;; esac \
    && if [ "${VARIANT}" = cuda ]; then \
        apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; fi
RUN index="${TORCH_INDEX_URL}"; \
    if [ -z "${index}" ] && [ "${VARIANT}" = cpu ]; then \
        index="https://download.pytorch.org/whl/cpu"; fi; \
    if [ -n "${index}" ]; then \
        pip install --no-cache-dir --index-url "${index}" "torch==${TORCH_VERSION}"; \
    else \
        pip install --no-cache-dir "torch==${TORCH_VERSION}"; fi
# The dependency versions the test suite last passed with (README, "Dependencies"). torch is
# pinned above; the CUDA build of torch brings the Triton it was built with, so for that
# variant Triton's pin is dropped.
COPY .ci/constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /wheels
RUN if [ "${VARIANT}" = cuda ]; then sed -i '/^triton==/d' /tmp/constraints.txt; fi \
    && pip install --no-cache-dir -c /tmp/constraints.txt "$(ls /wheels/*.whl)[engine]" \
    && rm -rf /wheels /tmp/constraints.txt

# The same uid as the daemon image: the CPU tier's shared memory and the daemon's ipc socket
# are created with owner-only permissions.
RUN useradd --system --uid "${ASYMCACHE_UID}" --user-group --no-create-home \
        --home-dir /var/cache/asymcache --shell /usr/sbin/nologin asymcache \
    && mkdir -p /var/cache/asymcache /run/asymcache /models \
    && chown asymcache:asymcache /var/cache/asymcache /run/asymcache
COPY docker/healthcheck.py /usr/local/bin/asymcache-healthcheck

# HOME holds the built-in model (ASYMCACHE_CACHE_DIR) and Triton's compiled kernels (~/.triton).
# Engine settings are ASYMCACHE_ENGINE_<FIELD> variables (engine/settings.py); the device
# follows the variant, so `docker run asymcache-engine:cuda` runs on the GPU it is given.
ENV PYTHONUNBUFFERED=1 \
    HOME=/var/cache/asymcache \
    ASYMCACHE_CACHE_DIR=/var/cache/asymcache \
    ASYMCACHE_ENGINE_DEVICE=${VARIANT} \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER asymcache
WORKDIR /var/cache/asymcache
# Bake the built-in model into the image: engines start without writing it.
RUN python -c "from asymcache.engine.builtin import resolve_model_dir; print(resolve_model_dir('builtin'))"

EXPOSE 8000
STOPSIGNAL SIGTERM
# Loading a large model (and measuring the device for the cost model) takes a while.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD python /usr/local/bin/asymcache-healthcheck "http://127.0.0.1:8000/health"
ENTRYPOINT ["asymcache"]
CMD ["engine", "--host", "0.0.0.0", "--port", "8000"]
