# Vitrine CPU image: FastAPI + onnxruntime, the default model baked in, one uvicorn worker per container.
#
#   docker build -t vitrine:0.1.0 .
#   docker run --rm -p 8000:8000 --cpus 2 --read-only --tmpfs /tmp vitrine:0.1.0
#
# BASE_IMAGE is any Debian/Ubuntu-like image: the official python slim image (Python in /usr/local), or a
# plain Debian root filesystem, in which case Python 3.11+ comes from apt (deploy/verify.sh does that, since
# no container registry is reachable there).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- python: the base image plus an interpreter, shared by both stages so the venv's paths match ----------
FROM ${BASE_IMAGE} AS python
SHELL ["/bin/sh", "-eu", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

# ---- build: a virtual environment with the runtime dependencies only (no torch, no export extra) ----------
FROM python AS build
ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# Debian's python3 has no ensurepip without python3-venv; the official python image has it already.
# hadolint ignore=DL3008
RUN if ! python3 -m venv /opt/venv 2>/dev/null; then \
        rm -rf /opt/venv; \
        apt-get update; \
        apt-get install -y --no-install-recommends python3-venv; \
        rm -rf /var/lib/apt/lists/*; \
        python3 -m venv /opt/venv; \
    fi
WORKDIR /src
# Dependencies first, from pyproject.toml's main list, so that a code change does not reinstall them.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt; \
    /opt/venv/bin/pip install -r requirements.txt
COPY app/ app/
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -c 'import app.main, onnxruntime; print("onnxruntime", onnxruntime.__version__)'

# ---- runtime ---------------------------------------------------------------------------------------------
FROM python AS runtime
ARG UID=10001
RUN groupadd --system --gid "${UID}" vitrine \
    && useradd --system --uid "${UID}" --gid vitrine --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vitrine
COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/vitrine/healthcheck.py
# The default model (models/<name>/<version>/model.json + ONNX files); mount another repository over it or
# point VITRINE_MODEL_REPOSITORY elsewhere to serve something else.
COPY models/ /opt/vitrine/models/
# Read-only root friendly: bytecode was compiled at install time, nothing is written outside /tmp.
# Intra-op and decode threads default to the container's CPU quota (cgroup cpu.max), so `--cpus` sizes them.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    VITRINE_HOST=0.0.0.0 \
    VITRINE_PORT=8000 \
    ORT_DISABLE_TELEMETRY=1 \
    VITRINE_MODEL_REPOSITORY=/opt/vitrine/models
WORKDIR /opt/vitrine
USER ${UID}:${UID}
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/vitrine/healthcheck.py"]
# One uvicorn worker: the batcher, the onnxruntime session and the metrics registry live in this process.
# Scale with replicas (compose --scale, Kubernetes), never with --workers.
ENTRYPOINT ["vitrine"]
CMD ["serve"]
