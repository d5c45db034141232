"""End to end: a batch file becomes stored pictures through real Redis, a real ``celery worker``
process, the sandbox over HTTP, and the database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
from PIL import Image
from sqlmodel import Session, col, select

from jobs.batchfile import load_batch
from jobs.db import make_engine
from jobs.models import Asset, Job
from jobs.producer import produce
from jobs.status import BatchStatus, batch_status
from jobs.storage import Storage
from tests.conftest import settings_from
from workers.app import make_app

CATALOG = """\
prompt,provider,name,aspect,count
a red leather boot on white,gencraft,sku-1042/front,3:4,1
the same boot from behind,gencraft,sku-1042/back,3:4,1
a wide banner of boots,gencraft,banner,16:9,1
two studies of a blue sneaker,gencraft,sneaker,1:1,2
"""


def wait_final(engine, batch_id: int, timeout: float = 90) -> BatchStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = batch_status(engine, batch_id)
        if status.final:
            return status
        time.sleep(0.2)
    raise AssertionError(f"batch not final after {timeout} s: {batch_status(engine, batch_id)}")


def test_a_batch_file_becomes_stored_pictures(tmp_path: Path, genq_env: dict[str, str], start_worker, sandbox_server):
    source = tmp_path / "catalog.csv"
    source.write_text(CATALOG)
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    start_worker()

    batch = produce(engine, load_batch(source)).batch
    make_app(settings).send_task("genq.dispatch")
    status = wait_final(engine, batch.id)

    assert status.state == "succeeded", status
    assert status.counts["succeeded"] == 4
    storage = Storage(settings.resolved_storage_url())
    with Session(engine) as session:
        jobs = {job.name: job for job in session.exec(select(Job).where(col(Job.batch_id) == batch.id))}
        assets = session.exec(select(Asset).order_by(col(Asset.job_id), col(Asset.index))).all()
    assert len(assets) == 5  # the sneaker asked for two
    expected_ratio = {"sku-1042/front": 3 / 4, "sku-1042/back": 3 / 4, "banner": 16 / 9, "sneaker": 1.0}
    for asset in assets:
        job = next(j for j in jobs.values() if j.id == asset.job_id)
        picture = Image.open(io.BytesIO(storage.get(asset.key)))
        assert picture.format == "PNG"
        assert (picture.width, picture.height) == (asset.width, asset.height)
        assert abs(picture.width / picture.height - expected_ratio[job.name]) < 0.02
    keys = {asset.key for asset in assets}
    folder = f"catalog-{batch.id}"
    assert {f"{folder}/sku-1042/front.png", f"{folder}/sneaker-1.png", f"{folder}/sneaker-2.png"} <= keys
    manifest = storage.get(f"{folder}/results.jsonl").decode().splitlines()
    assert len(manifest) == 4

    stats = httpx.get(f"{sandbox_server.url}/_sandbox/stats").json()
    assert stats["repeated_submissions"]["count"] == 0
    assert sum(1 for r in stats["requests"] if r["kind"] == "submit") == 4


def test_a_failed_generation_fails_its_job_and_the_batch(tmp_path: Path, genq_env: dict[str, str], start_worker):
    source = tmp_path / "mixed.jsonl"
    source.write_text(
        '{"prompt": "a calm lake", "provider": "gencraft"}\n'
        '{"prompt": "a storm sandbox:fail", "provider": "gencraft"}\n'
    )
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    start_worker()

    batch = produce(engine, load_batch(source)).batch
    make_app(settings).send_task("genq.dispatch")
    status = wait_final(engine, batch.id)

    assert status.state == "failed"
    assert status.counts["succeeded"] == 1 and status.counts["failed"] == 1
    assert status.errors[0]["line"] == 2
    assert "model overloaded" in status.errors[0]["error"]
