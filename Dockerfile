# gatehook worker image.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && useradd --system --uid 10001 gatehook
USER gatehook
# Liveness: the process answers; readiness is a NATS request (see README, Operations).
CMD ["gatehook", "worker"]
