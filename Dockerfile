# A worker image with eventworker and the example plugin; docker-compose.yml runs it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install . ./examples/plugin \
    && useradd --system --no-create-home --uid 10001 eventworker \
    && mkdir /app

# Settings come from EVENTWORKER_* variables, or a file mounted at /app/eventworker.toml.
WORKDIR /app
USER eventworker
# Exec form: eventworker is PID 1 and receives `docker stop`'s SIGTERM itself, so it drains.
ENTRYPOINT ["eventworker"]
CMD ["run"]
