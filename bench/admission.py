"""Admission cost: one dispatch round's time with 10,000 and with 1,000,000 pending jobs on PostgreSQL.

A round must cost what it claims, not what waits: with the per-batch index it reads a few hundred
rows whatever the backlog. The jobs are made inside PostgreSQL (``generate_series``), in a schema of
their own that is dropped afterwards.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis
import yaml
from sqlalchemy import create_engine, text

from jobs.db import make_engine, migrate
from jobs.redisserver import EmbeddedRedis
from jobs.settings import Settings
from workers.dispatch import dispatch
from workers.runtime import Runtime

DATABASE_URL = os.environ.get("GENQ_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROUNDS = 7
CLAIM = 100
"""Jobs one round claims (the account's in-flight room)."""
BATCHES = 4


def round_seconds(pending: int, redis_url: str, work: Path) -> float:
    """The median time of a dispatch round with ``pending`` jobs waiting over ``BATCHES`` batches."""
    schema = f"genq_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(DATABASE_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{DATABASE_URL}{'&' if '?' in DATABASE_URL else '?'}options=-csearch_path%3D{schema}"
    try:
        engine = make_engine(url)
        migrate(engine)
        with engine.begin() as connection:
            for number in range(BATCHES):
                batch_id = connection.execute(
                    text(
                        "INSERT INTO batches (name, source, content_hash, priority, state, job_count, created_at) "
                        "VALUES (:name, 'bench.csv', :name, 0, 'running', :count, now()) RETURNING id"
                    ),
                    {"name": f"bench-{number}", "count": pending // BATCHES},
                ).scalar_one()
                connection.execute(
                    text(
                        "INSERT INTO jobs (batch_id, seq, line, provider, priority, spec, state, attempts, "
                        "created_at, updated_at) SELECT :batch, n, n + 1, 'gencraft', 0, "
                        "'{\"prompt\": \"p\", \"provider\": \"gencraft\"}', 'pending', 0, now(), now() "
                        "FROM generate_series(1, :count) AS n"
                    ),
                    {"batch": batch_id, "count": pending // BATCHES},
                )
            connection.execute(text("ANALYZE jobs"))
        accounts = work / f"accounts-{schema}.yaml"
        accounts.write_text(
            yaml.safe_dump(
                {"accounts": [{"name": f"bench-{schema}", "provider": "gencraft", "api_key_env": "GENQ_BENCH_KEY",
                               "base_url": "http://127.0.0.1:9", "rpm": 10_000_000, "max_in_flight": CLAIM}]}
            )
        )  # fmt: skip
        os.environ["GENQ_BENCH_KEY"] = "bench"
        runtime = Runtime(Settings(database_url=url, redis_url=redis_url, accounts=accounts, var_dir=work))
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            claimed = dispatch(runtime)
            times.append(time.perf_counter() - started)
            assert len(claimed) == CLAIM, len(claimed)
            with engine.begin() as connection:  # they are done: room for the next round
                connection.execute(text("UPDATE jobs SET state = 'succeeded' WHERE state = 'queued'"))
        runtime.close()
        engine.dispose()
        return statistics.median(times)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="genq-bench-admission-") as tmp, EmbeddedRedis(Path(tmp)) as server:
        redis_url = os.environ.get("GENQ_BENCH_REDIS_URL", server.url)
        redis.Redis.from_url(redis_url.replace("redis+socket://", "unix://", 1)).flushdb()
        small = round_seconds(10_000, redis_url, Path(tmp))
        large = round_seconds(1_000_000, redis_url, Path(tmp))
    print(f"admission: one dispatch round claiming {CLAIM} jobs on PostgreSQL, median of {ROUNDS}")
    print(f"  10,000 pending     {small * 1000:8.1f} ms")
    print(f"  1,000,000 pending  {large * 1000:8.1f} ms")
    print(f"  ratio              {large / small:8.2f}   (goal 1.2 or less)")
    return {"admission_10k_ms": small * 1000, "admission_1m_ms": large * 1000, "admission_ratio": large / small}


if __name__ == "__main__":
    main()
