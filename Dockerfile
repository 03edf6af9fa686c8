# scripts-engine: the engine, its data and the REST service in one image.
#   docker build -t scripts-engine . && docker run -p 8000:8000 scripts-engine
#   docker exec <container> scripts-engine keys create --role dialler
# Dependencies are installed before the code is copied, so a code change rebuilds only the
# last layers. Runs as a non-root user; state (model, audio, database) lives in /app/var.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SCRIPTS_ENGINE_PERSONAS_DIR=/app/personas \
    SCRIPTS_ENGINE_VOICES_DIR=/app/voices \
    SCRIPTS_ENGINE_DATA_DIR=/app/data \
    SCRIPTS_ENGINE_STATE_DIR=/app/var

WORKDIR /app

# 1. dependencies only (this layer changes when pyproject.toml does)
COPY pyproject.toml ./
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# 2. the code and the data it ships with
COPY README.md ./
COPY scripts_engine ./scripts_engine
COPY api ./api
COPY personas ./personas
COPY voices ./voices
COPY data ./data
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /app/var \
    && chown app:app /app/var

USER app
EXPOSE 8000
# the same as `make run`, listening on every interface of the container
CMD ["scripts-engine", "serve", "--demo", "--host", "0.0.0.0", "--port", "8000"]
