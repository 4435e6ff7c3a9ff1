# The Pennant image: one image for the API (`pennant api`, the default) and the worker
# (`pennant worker`); docker-compose.yml runs both.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs: no virtualenv, local data or tests end up in the image.
COPY pyproject.toml README.md ./
COPY core ./core
COPY activities ./activities
COPY workflows ./workflows
COPY workers ./workers
COPY api ./api
COPY devstack ./devstack
RUN pip install . && rm -rf build ./*.egg-info

COPY tenant_configs ./tenant_configs

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin pennant \
    && mkdir -p /app/.data \
    && chown pennant:pennant /app/.data
USER pennant

EXPOSE 8000
CMD ["pennant", "api"]
