# gatehook image: the worker, and with another command the console, the gateway or the CLI.
# The console's script editor (Monaco, pinned in its package-lock.json) comes from npm here.
FROM node:20-slim AS editor
WORKDIR /editor
COPY src/gatehook/console/editor/package.json src/gatehook/console/editor/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GATEHOOK_CONSOLE__EDITOR_ASSETS=/app/editor/vs
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
COPY --from=editor /editor/node_modules/monaco-editor/min/vs ./editor/vs
RUN pip install -c constraints.txt . && useradd --system --uid 10001 gatehook
USER gatehook
# Liveness: the process answers; readiness is a NATS request (docs/operations.md).
CMD ["gatehook", "worker"]
