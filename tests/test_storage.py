"""The object store: the same behaviour from local files, memory and S3, and a batch run end to end with its
pictures and results in S3.

S3 is moto's server mode, a local S3 on loopback started by this module; genq reaches it exactly as the
production stack reaches MinIO (``GENQ_STORAGE_URL=s3://bucket/prefix`` and the ``AWS_*`` variables of
``compose.yaml``). What the run stored is read back with boto3, not through genq, so the check does not
lean on the code it checks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image
from sqlmodel import Session, col, select

from jobs.batchfile import load_batch
from jobs.db import make_engine
from jobs.errors import StorageError
from jobs.models import Asset, Batch, Job
from jobs.producer import produce
from jobs.storage import Storage, batch_folder
from tests.conftest import settings_from
from tests.test_pipeline import wait_final
from workers.app import make_app

REGION = "us-east-1"

SHOES = """\
prompt,provider,name,aspect,count
a red leather boot on white,gencraft,boot/front,3:4,1
a wide banner of boots,gencraft,banner,16:9,1
two studies of a blue sneaker,gencraft,sneaker,1:1,2
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto server for the session; each test gets a bucket of its own in it."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass(frozen=True)
class Bucket:
    """A fresh bucket in the local S3, and the prefix genq is given inside it."""

    endpoint: str
    name: str
    prefix: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}/{self.prefix}"

    def env(self) -> dict[str, str]:
        """What a genq process needs to reach this bucket: the variables ``compose.yaml`` sets for MinIO."""
        return {
            "GENQ_STORAGE_URL": self.url,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "genq-test",
            "AWS_SECRET_ACCESS_KEY": "genq-test-secret",
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="genq-test",
            aws_secret_access_key="genq-test-secret",
        )

    def read(self, key: str) -> bytes:
        """An object by the key genq gave it, read straight from the bucket."""
        return bytes(self.client().get_object(Bucket=self.name, Key=f"{self.prefix}/{key}")["Body"].read())

    def keys(self) -> set[str]:
        """Every object in the bucket, as genq names it (below the prefix)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name)
        found = {item["Key"] for page in pages for item in page.get("Contents", [])}
        assert all(key.startswith(f"{self.prefix}/") for key in found), f"objects outside the prefix: {found}"
        return {key.removeprefix(f"{self.prefix}/") for key in found}


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    bucket = Bucket(endpoint=s3_endpoint, name=f"genq-{uuid.uuid4().hex[:12]}", prefix="objects")
    bucket.client().create_bucket(Bucket=bucket.name)
    for name, value in bucket.env().items():
        if name != "GENQ_STORAGE_URL":
            monkeypatch.setenv(name, value)
    return bucket


@pytest.fixture(params=["file", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Every store genq can be given, so one behaviour test pins all three alike."""
    if request.param == "file":
        return Storage(f"file://{tmp_path / 'objects'}")
    if request.param == "memory":
        return Storage("memory://")
    bucket: Bucket = request.getfixturevalue("s3_bucket")
    return Storage(bucket.url)


# -- the store's behaviour, on every store ---------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)) * 4, b"\x89PNG" + bytes(6 * 1024 * 1024)],
    ids=["empty", "every-byte", "past-one-part"],
)
def test_what_is_put_is_got_back_byte_for_byte(storage: Storage, data: bytes) -> None:
    """Pictures are binary and can be large: 6 MiB is past obstore's 5 MiB part, so S3 takes a multipart upload."""
    storage.put("shoes-1/sku-1042/front.png", data)

    assert storage.get("shoes-1/sku-1042/front.png") == data


def test_a_second_put_replaces_the_first(storage: Storage) -> None:
    """A collect delivered twice writes the same key again; the reader sees one whole object, the last."""
    storage.put("shoes-1/manifest.jsonl", b'{"job": 1}\n')
    storage.put("shoes-1/manifest.jsonl", b'{"job": 1}\n{"job": 2}\n')

    assert storage.get("shoes-1/manifest.jsonl") == b'{"job": 1}\n{"job": 2}\n'


def test_keys_are_kept_apart(storage: Storage) -> None:
    """Two batches of one name live in two folders; a key is never confused with its neighbour."""
    storage.put(f"{batch_folder(1, 'shoes')}/front.png", b"first")
    storage.put(f"{batch_folder(2, 'shoes')}/front.png", b"second")

    assert storage.get("shoes-1/front.png") == b"first"
    assert storage.get("shoes-2/front.png") == b"second"


def test_a_missing_key_is_a_storage_error_naming_it(storage: Storage) -> None:
    """obstore's not-found is translated at the store's boundary, so callers catch one genq error."""
    storage.put("shoes-1/front.png", b"here")

    with pytest.raises(StorageError, match=r"shoes-1/back\.png is not in") as refused:
        storage.get("shoes-1/back.png")
    assert isinstance(refused.value.__cause__, FileNotFoundError)


def test_where_names_a_place_a_person_can_open(storage: Storage, tmp_path: Path) -> None:
    """The summary prints it: a path that holds the picture for local files, a URL of the object otherwise."""
    storage.put("shoes-1/front.png", b"picture")

    place = storage.where("shoes-1/front.png")

    if storage.url.startswith("file://"):
        assert Path(place) == tmp_path / "objects" / "shoes-1" / "front.png"
        assert Path(place).read_bytes() == b"picture"
        assert Path(storage.where()) == tmp_path / "objects"
    else:
        expected = {"memory://": "memory://shoes-1/front.png"}.get(storage.url, f"{storage.url}/shoes-1/front.png")
        assert place == expected


# -- what only one store can do --------------------------------------------------------------------


def test_each_memory_store_is_its_own() -> None:
    """``memory://`` is one process's scratch space: a second store opened on it starts empty."""
    Storage("memory://").put("shoes-1/front.png", b"picture")

    with pytest.raises(StorageError):
        Storage("memory://").get("shoes-1/front.png")


def test_s3_objects_land_below_the_prefix_of_the_url(s3_bucket: Bucket) -> None:
    """``s3://bucket/prefix``: genq's keys are relative to the prefix, so one bucket can hold several deployments."""
    Storage(s3_bucket.url).put("shoes-1/front.png", b"picture")

    assert s3_bucket.keys() == {"shoes-1/front.png"}
    assert s3_bucket.read("shoes-1/front.png") == b"picture"


def test_a_bucket_that_does_not_exist_refuses_the_write(s3_bucket: Bucket) -> None:
    """A misnamed bucket shows up as a StorageError on the first write, naming the key and the store."""
    url = f"s3://{s3_bucket.name}-missing/objects"

    with pytest.raises(StorageError, match=r"cannot write shoes-1/front\.png to s3://"):
        Storage(url).put("shoes-1/front.png", b"picture")


def test_a_store_url_obstore_cannot_open_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot open storage"):
        Storage("nosuchscheme://somewhere/objects")


# -- a whole batch through S3 ----------------------------------------------------------------------


def test_a_batch_stores_its_pictures_and_results_in_s3(
    tmp_path: Path, genq_env: dict[str, str], s3_bucket: Bucket, start_worker: Any
) -> None:
    """The production path: a worker given ``s3://`` stores every picture there, as the database records it."""
    genq_env.update(s3_bucket.env())  # the worker process is started with this environment
    source = tmp_path / "shoes.csv"
    source.write_text(SHOES)
    settings = settings_from(genq_env)
    engine = make_engine(settings.resolved_database_url())
    start_worker()

    batch = produce(engine, load_batch(source)).batch
    assert batch.id is not None
    make_app(settings).send_task("genq.dispatch")
    status = wait_final(engine, batch.id)

    assert status.state == "succeeded", status
    with Session(engine) as session:
        jobs = session.exec(select(Job).where(col(Job.batch_id) == batch.id).order_by(col(Job.seq))).all()
        assets = session.exec(
            select(Asset).join(Job, col(Job.id) == col(Asset.job_id)).where(col(Job.batch_id) == batch.id)
        ).all()
        finished = session.get(Batch, batch.id)
    assert len(jobs) == 3 and len(assets) == 4  # the sneaker asked for two

    # Every picture is in the bucket, byte for byte what its Asset row says, and readable through genq.
    folder = batch_folder(batch.id, batch.name)
    for asset in assets:
        stored = s3_bucket.read(asset.key)
        assert len(stored) == asset.bytes, asset.key
        assert hashlib.sha256(stored).hexdigest() == asset.sha256, asset.key
        picture = Image.open(io.BytesIO(stored))
        assert (picture.format, picture.width, picture.height) == ("PNG", asset.width, asset.height)
        assert asset.key.startswith(f"{folder}/")
    reader = Storage(s3_bucket.url)
    assert all(reader.get(asset.key) == s3_bucket.read(asset.key) for asset in assets)

    # The results are beside the pictures and account for every row and every picture.
    assert finished is not None and finished.manifest_key == f"{folder}/results.jsonl"
    lines = [json.loads(line) for line in s3_bucket.read(f"{folder}/results.jsonl").decode().splitlines()]
    assert [line["job"] for line in lines] == [job.seq for job in jobs]
    assert [line["fields"]["prompt"] for line in lines] == [job.spec["prompt"] for job in jobs]
    assert all(line["state"] == "succeeded" for line in lines)
    recorded = {(a.key, a.sha256, a.bytes) for a in assets}
    listed = {(image["key"], image["sha256"], image["bytes"]) for line in lines for image in line["pictures"]}
    assert listed == recorded
    rows = list(csv.DictReader(io.StringIO(s3_bucket.read(f"{folder}/results.csv").decode())))
    assert [int(row["job"]) for row in rows] == [job.seq for job in jobs]
    assert {key for row in rows for key in row["pictures"].split()} == {a.key for a in assets}
    assert s3_bucket.read(f"{folder}/errors.csv").decode().splitlines() == ["prompt,provider,name"]

    # Nothing went anywhere else: the bucket holds this batch's folder only, and no local store was made.
    stored_keys = s3_bucket.keys()
    results = {f"{folder}/{name}" for name in ("results.jsonl", "results.csv", "errors.csv")}
    assert {a.key for a in assets} | results <= stored_keys
    assert all(key.startswith(f"{folder}/") for key in stored_keys), stored_keys
    assert not (tmp_path / "objects").exists()
