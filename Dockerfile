# The genq image: one image for every genq process of the stack (workers, beat, Flower, watcher).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobs ./jobs
COPY workers ./workers
COPY sandbox ./sandbox
RUN pip install . \
    && rm -rf /src

# Runtime files (the beat schedule under var/, the drop folder under batches/) live in /app, owned
# by an unprivileged user; uid 1000 matches the usual owner of a bind-mounted ./batches.
RUN useradd --create-home --uid 1000 --user-group genq \
    && mkdir -p /app/var /app/batches/inbox /app/batches/done /app/batches/failed /config \
    && chown -R genq:genq /app

WORKDIR /app
USER genq

CMD ["genq", "--help"]
