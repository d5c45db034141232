"""Hostile provider answers, through one real ``celery worker`` against a stand-in gencraft over HTTP.

The stand-in speaks gencraft's API on loopback and chooses its answer by the job's prompt: a
decompression bomb, a 169 MP picture, an HTML page served with 200 as the picture, a picture past
the 50 MB cap, a 200 MB answer to a submit and to a poll, a gzip bomb, a body cut mid-way, picture
links to loopback, a private address and the metadata service, a redirect to loopback; and a
``file://`` reference in a batch file. The worker runs with the default caps, so the 200 MB answers
are real (streamed, so neither side holds them).

Each case ends its job final with a reason that says what was wrong (or with a retry that helps),
the worker logs it naming the job and the account but never the key, and the next job of the same
worker succeeds. The worker's peak memory (VmHWM of its processes) stays under 300 MB throughout.

"No connection was made" is observed, not inferred: the worker runs with a Python audit hook
(``sitecustomize`` on its ``PYTHONPATH``) that records every address it calls ``connect`` on, and the
loopback targets are listening sockets that count what reaches them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import yaml
from PIL import Image
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from jobs.batchfile import load_batch
from jobs.db import make_engine, migrate
from jobs.models import Asset, Batch, Job, JobEvent
from jobs.producer import produce
from jobs.redisserver import client_url
from jobs.settings import Settings
from tests.conftest import ROOT, WorkerProcess, postgres_schema
from tests.test_pipeline import wait_final
from workers.app import make_app

KEY = "sk-hostile-7f3a9c0e5b1d4a2f"
"""The account's key: it must appear in no log line."""
ACCOUNT = "hostile-1"
SIGNATURE = "Signature=tok-5e8b0c1a9d"
"""The query of every picture link the stand-in hands out, as a signed CDN link carries its token:
it must appear in no reason and no log line."""
MEMORY_CEILING = 300 * 1024 * 1024
"""Bytes; the most any process of the worker may have held at once (VmHWM)."""
BIG = 200 * 1024 * 1024
"""Bytes of the huge submit and poll answers."""
PICTURE_CAP = Settings.model_fields["max_image_bytes"].default
FIFTY = PICTURE_CAP + 1024 * 1024
"""A picture just past the default 50 MB cap, sent without a length, so it is read until the cap."""
PRIVATE = "10.1.2.3"
METADATA = "169.254.169.254"


# --- pictures -------------------------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    """A real 1-bit palette PNG, every row present: a bomb that Pillow would decode in full if asked,
    in a few kB (30000x30000 is 109 kB and 900 MP)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)
    return b"".join(
        (b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff"),
         chunk(b"IDAT", pixels), chunk(b"IEND", b""))
    )  # fmt: skip


def small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 32), (20, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def gzip_bomb(inflated: int = 1024**3) -> bytes:
    """About 1 MB of gzip that inflates to ``inflated`` bytes (1 GiB) of a JSON answer."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    block = b" " * (1024 * 1024)
    parts = [packer.compress(b'{"task_id": "task_x", "status": "completed", "padding": "')]
    parts += [packer.compress(block) for _ in range(inflated // len(block))]
    return b"".join(parts) + packer.flush()


SIGN_IN_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
    b"<body><form action=/login><input name=user><input name=password type=password></form></body></html>"
)


# --- the stand-in provider ------------------------------------------------------------------------


class StandIn(ThreadingHTTPServer):
    """gencraft's API on 127.0.0.1: submit, poll one or many, history, and the picture files. Its
    answer is chosen by the job's prompt; any other prompt is served well."""

    daemon_threads = True

    def __init__(self, loopback_port: int) -> None:
        super().__init__(("127.0.0.1", 0), Answer)
        self.loopback_port = loopback_port
        self.lock = threading.Lock()
        self.tasks: dict[str, str] = {}
        """Task id -> the prompt it was made for."""
        self.generated: Counter[str] = Counter()
        """Generate requests per prompt: what would have been paid for."""
        self.polls: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        """Picture files asked for, by name."""
        self.sent: dict[str, int] = {}
        """Bytes of a big answer that left before the client hung up, by prompt."""
        self.history: list[dict[str, Any]] = []
        self.uploads = 0
        self.pictures = {"normal.png": small_png(), "bomb.png": png(30_000, 30_000), "huge.png": png(13_000, 13_000)}
        self._bomb: bytes | None = None
        self._bomb_ready = threading.Event()
        threading.Thread(target=self._make_bomb, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def file_url(self, name: str) -> str:
        return f"{self.url}/files/{name}?Expires=1999999999&{SIGNATURE}"

    def gzip_bomb(self) -> bytes:
        self._bomb_ready.wait(60)
        assert self._bomb is not None
        return self._bomb

    def _make_bomb(self) -> None:
        self._bomb = gzip_bomb()
        self._bomb_ready.set()

    def new_task(self, prompt: str) -> str:
        with self.lock:
            task_id = f"task_{len(self.tasks) + 1:04d}"
            self.tasks[task_id] = prompt
            self.generated[prompt] += 1
        return task_id

    def picture_link(self, prompt: str, task_id: str = "") -> str:
        """Where a finished task of ``prompt`` says its picture is; a good picture's link is its own."""
        links = {
            "bomb": self.file_url("bomb.png"),
            "huge": self.file_url("huge.png"),
            "html": self.file_url("page.png"),
            "fifty": self.file_url("fifty.png"),
            "loopback": f"http://127.0.0.1:{self.loopback_port}/x.png?{SIGNATURE}",
            "private": f"http://{PRIVATE}/x.png?{SIGNATURE}",
            "metadata": f"http://{METADATA}/latest/meta-data/iam/security-credentials/",
            "redirect": self.file_url("hop.png"),
        }
        return links.get(prompt, self.file_url(f"{task_id}.png"))


class Answer(BaseHTTPRequestHandler):
    """One request to the stand-in. HTTP/1.0: every answer closes its connection, so a body with no
    length runs until the close, and a cut body is a close before the length is reached."""

    server: StandIn

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        path = urlsplit(self.path).path
        if path == "/api/v1/upload":
            with self.server.lock:
                self.server.uploads += 1
            return self._json(400, {"error": {"type": "invalid_request", "message": "no uploads here"}})
        if path != "/api/v1/generate":
            return self._json(404, {"error": {"type": "not_found", "message": "no such endpoint"}})
        prompt = str(body.get("prompt", ""))
        task_id = self.server.new_task(prompt)
        if prompt == "bigsubmit":
            return self._big(prompt, b'{"task_ids": ["' + task_id.encode() + b'"], "padding": "')
        if prompt == "cutsubmit":  # taken, and listed in history, but the answer breaks off
            with self.server.lock:
                self.server.history.insert(0, _history_item(task_id, prompt, self.server.file_url(f"{task_id}.png")))
            return self._cut(b'{"task_ids": ["' + task_id.encode())
        self._json(200, {"task_ids": [task_id], "email": "stand-in@example.com"})

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.startswith("/files/"):
            return self._file(parts.path.removeprefix("/files/"))
        if parts.path == "/api/v1/history":
            with self.server.lock:
                items = list(self.server.history)
            return self._json(200, {"items": items, "total": len(items), "page": 1, "limit": 50, "total_pages": 1})
        if parts.path.startswith("/api/v1/tasks/"):
            return self._poll([parts.path.removeprefix("/api/v1/tasks/")], many=False)
        if parts.path == "/api/v1/tasks":
            return self._poll(parse_qs(parts.query)["ids"][0].split(","), many=True)
        self._json(404, {"error": {"type": "not_found", "message": "no such endpoint"}})

    def _poll(self, task_ids: list[str], *, many: bool) -> None:
        prompts = [self.server.tasks.get(task_id, "") for task_id in task_ids]
        with self.server.lock:
            self.server.polls.update(task_ids)
            first = self.server.polls[task_ids[0]] == 1
        if "bigpoll" in prompts:
            return self._big("bigpoll", b'{"task_id": "' + task_ids[0].encode() + b'", "padding": "')
        if "gzipbomb" in prompts:
            bomb = self.server.gzip_bomb()
            return self._raw(200, bomb, "application/json", (("Content-Encoding", "gzip"),))
        if "cutpoll" in prompts and first:
            return self._cut(b'{"task_id": "' + task_ids[0].encode() + b'", "status": "comp')
        items = [
            {"task_id": task_id, "status": "completed", "progress": 100,
             "imageUrl": self.server.picture_link(prompt, task_id)}
            for task_id, prompt in zip(task_ids, prompts, strict=True)
        ]  # fmt: skip
        self._json(200, {"tasks": items} if many else items[0])

    def _file(self, name: str) -> None:
        with self.server.lock:
            self.server.served[name] += 1
        if name in self.server.pictures:
            return self._raw(200, self.server.pictures[name], "image/png")
        if name.removesuffix(".png") in self.server.tasks:
            return self._raw(200, self.server.pictures["normal.png"], "image/png")
        if name == "page.png":
            return self._raw(200, SIGN_IN_PAGE, "text/html; charset=utf-8")
        if name == "hop.png":
            target = f"http://127.0.0.1:{self.server.loopback_port}/x.png?{SIGNATURE}"
            return self._raw(302, b"", "text/plain", (("Location", target),))
        if name == "fifty.png":  # no length given: read until the close, or until the cap
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            return self._stream("fifty", b"\x89PNG\r\n\x1a\n", FIFTY)
        self._raw(404, b"not found", "text/plain")

    def _big(self, prompt: str, head: bytes) -> None:
        """A JSON answer of ``BIG`` bytes, with its length, made as it is sent."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(BIG))
        self.end_headers()
        self._stream(prompt, head, BIG, tail=b'"}')

    def _stream(self, prompt: str, head: bytes, total: int, tail: bytes = b"") -> None:
        block = (b" " if tail else b"\x00") * (1024 * 1024)
        sent = 0
        try:
            self.wfile.write(head)
            sent = len(head)
            while sent < total - len(tail):
                piece = block[: total - len(tail) - sent]
                self.wfile.write(piece)
                sent += len(piece)
            self.wfile.write(tail)
            sent += len(tail)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what it was sent is counted
        with self.server.lock:
            self.server.sent[prompt] = sent

    def _cut(self, part: bytes) -> None:
        """A JSON answer that claims more than it sends, then the connection closes."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(part) + 500))
        self.end_headers()
        self.wfile.write(part)
        self.wfile.flush()
        self.close_connection = True

    def _json(self, status: int, payload: Any) -> None:
        self._raw(status, json.dumps(payload).encode(), "application/json")

    def _raw(self, status: int, body: bytes, kind: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _history_item(task_id: str, prompt: str, picture: str) -> dict[str, Any]:
    """A history entry as gencraft lists one, its one picture made: how a lost submit is found."""
    return {"id": f"hist_{task_id}", "prompt": prompt, "model": "gpt-image-2", "mode": "text", "aspect": "1:1",
            "imageSize": "2K", "imageCount": 1, "images": [picture], "refs": [],
            "createdAt": int(time.time() * 1000)}  # fmt: skip


class Listener:
    """A port on loopback that must never be reached: it listens and never answers, and
    ``connections`` counts what completed a connect into its backlog."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])

    def connections(self) -> int:
        count = 0
        while True:
            try:
                connection, _ = self.sock.accept()
            except BlockingIOError:
                return count
            connection.close()
            count += 1


# --- the worker and its observers -----------------------------------------------------------------

CONNECT_RECORDER = '''"""Records every address this process connects a socket to: an observer, it changes nothing.

The file is opened for each line: a pool or beat child closes the descriptors it inherits, and a
descriptor kept open could be a socket by the time it is written to."""
import os
import sys

_path = os.environ.get("HOSTILE_CONNECT_LOG")


def _record(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple):
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{args[1][0]} {args[1][1]}\\n".encode())
        finally:
            os.close(fd)


if _path:
    sys.addaudithook(_record)
'''


def tree_peak(pid: int) -> dict[int, int]:
    """VmHWM (the most resident memory it ever held), in bytes, of ``pid`` and every descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    peaks: dict[int, int] = {}
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if found:
            peaks[current] = int(found.group(1)) * 1024
        pending += children.get(current, [])
    return peaks


@dataclass
class Rig:
    """The stand-in, one worker, the database it writes to, and what the observers saw."""

    tmp: Path
    env: dict[str, str]
    engine: Engine
    stand_in: StandIn
    loopback: Listener
    worker: WorkerProcess
    connect_log: Path
    peaks: dict[str, int] = field(default_factory=dict)
    """The worker's peak memory after each case, in bytes."""
    normal_jobs: int = 0

    def run(self, prompt: str, *, name: str | None = None, timeout: float = 60) -> Job:
        """Submit a one-job batch of ``prompt`` and wait until the batch is final; its job."""
        name = name or prompt
        source = self.tmp / f"{name}.csv"
        source.write_text(f"prompt,provider,name\n{prompt},gencraft,{name}\n")
        batch = produce(self.engine, load_batch(source)).batch
        make_app(settings_of(self.env)).send_task("genq.dispatch")
        wait_final(self.engine, batch.id, timeout=timeout)
        with Session(self.engine) as session:
            return session.exec(select(Job).where(col(Job.batch_id) == batch.id)).one()

    def next_job_succeeds(self, case: str) -> None:
        """The next job of the same worker is served as well as the first: stored, checked, whole."""
        self.normal_jobs += 1
        job = self.run(f"a lamp number {self.normal_jobs}", name=f"next-{self.normal_jobs}")
        assert (job.state, job.error) == ("succeeded", None)
        with Session(self.engine) as session:
            asset = session.exec(select(Asset).where(col(Asset.job_id) == job.id)).one()
        assert (asset.width, asset.height, asset.content_type) == (48, 32, "image/png")
        peaks = tree_peak(self.worker.process.pid)
        self.peaks[case] = max(peaks.values())
        assert self.peaks[case] < MEMORY_CEILING, f"after {case}: VmHWM {peaks}"

    def log_lines(self, job: Job) -> list[str]:
        """The worker's log lines about ``job`` (the submit, poll and collect lines name it)."""
        text = self.worker.log.read_text(errors="replace")
        return [line for line in text.splitlines() if re.search(rf"\bjob(\(s\))? {job.id}\b", line)]

    def connected(self) -> list[tuple[str, int]]:
        lines = self.connect_log.read_text().split("\n") if self.connect_log.exists() else []
        return [(host, int(port)) for host, port in (line.split() for line in lines if line)]


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(redis_url=env["GENQ_REDIS_URL"], database_url=env["GENQ_DATABASE_URL"])


@pytest.fixture(scope="module")
def module_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL when the suite is given one (as CI), else SQLite: one database for the module, as
    what is under test is the worker's answer to HTTP, the same on either."""
    base = os.environ.get("GENQ_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path_factory.mktemp('hostile-db') / 'genq.db'}"
        return
    with postgres_schema(base, "genq_hostile") as url:
        yield url


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, redis_url: str, module_database: str) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("hostile")
    redis.Redis.from_url(client_url(redis_url)).flushdb()
    loopback = Listener()
    stand_in = StandIn(loopback.port)
    threading.Thread(target=stand_in.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    account = {"name": ACCOUNT, "provider": "gencraft", "api_key_env": "GENQ_TEST_HOSTILE_KEY",
               "base_url": stand_in.url, "rpm": 600, "max_in_flight": 8}  # fmt: skip
    (tmp / "accounts.yaml").write_text(yaml.safe_dump({"accounts": [account]}))
    observer = tmp / "observer"
    observer.mkdir()
    (observer / "sitecustomize.py").write_text(CONNECT_RECORDER)
    defaults = Settings.model_fields
    env = {
        "GENQ_VAR_DIR": str(tmp / "var"),
        "GENQ_DATABASE_URL": module_database,
        "GENQ_REDIS_URL": redis_url,
        "GENQ_STORAGE_URL": f"file://{tmp / 'objects'}",
        "GENQ_ACCOUNTS": str(tmp / "accounts.yaml"),
        "GENQ_TEST_HOSTILE_KEY": KEY,
        "GENQ_FIRST_POLL_DELAY": "0.3",
        "GENQ_DISPATCH_INTERVAL": "0.5",
        "GENQ_SWEEP_INTERVAL": "0.3",
        "GENQ_RECONCILE_INTERVAL": "1",
        # A lost submit's lease (three time-outs and the margin: 10 s) and the time its record is
        # searched after it, short enough for a test, long enough for one search.
        "GENQ_HTTP_TIMEOUT": "3",
        "GENQ_LEASE_MARGIN": "1",
        "GENQ_SETTLE_FOR": "5",
        # The caps under test, at their defaults, whatever the calling shell says.
        "GENQ_MAX_ANSWER_BYTES": str(defaults["max_answer_bytes"].default),
        "GENQ_MAX_IMAGE_BYTES": str(defaults["max_image_bytes"].default),
        "GENQ_MAX_IMAGE_PIXELS": str(defaults["max_image_pixels"].default),
        "GENQ_TRUSTED_HOSTS": "",
    }
    engine = make_engine(module_database)
    migrate(engine)
    worker_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(observer), os.environ.get("PYTHONPATH")])),
                  "HOSTILE_CONNECT_LOG": str(tmp / "connects.log")}  # fmt: skip
    worker = WorkerProcess(worker_env, tmp / "worker.log", concurrency=4)
    try:
        worker.wait_ready()
        yield Rig(tmp, env, engine, stand_in, loopback, worker, tmp / "connects.log")
    finally:
        worker.stop()
        stand_in.shutdown()
        stand_in.server_close()
        loopback.sock.close()
        engine.dispose()


def _common(rig: Rig, job: Job) -> list[str]:
    """What every case shows: a final job, and neither the key nor a link's token in its reason or
    anywhere in the worker's log. The worker's lines about the job, for each case to look for its own."""
    assert job.state in ("succeeded", "failed"), (job.state, job.error)
    lines = rig.log_lines(job)
    log = rig.worker.log.read_text(errors="replace")
    assert KEY not in log and KEY not in (job.error or "")
    assert "tok-5e8b0c1a9d" not in log and "tok-5e8b0c1a9d" not in (job.error or "")
    return lines


# --- the cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("bomb", ["a decompression bomb: 30000x30000 (900 MP) in 109463 bytes", "not decoded"]),
        ("huge", ["a picture of 13000x13000 (169 MP), over the 64 MP limit"]),
        ("html", ["not a readable image: an HTML page of"]),
        ("fifty", [f"is over the {PICTURE_CAP} byte limit"]),
    ],
    ids=["decompression bomb", "169 MP picture", "HTML page with 200", "picture past 50 MB"],
)
def test_a_picture_that_is_not_taken_fails_its_job_for_good_with_why(rig: Rig, prompt: str, words: list[str]):
    job = rig.run(prompt)

    lines = _common(rig, job)
    assert job.state == "failed"
    assert job.error is not None and job.error.startswith(f"image {rig.stand_in.url}/files/"), job.error
    for expected in words:
        assert expected in job.error, job.error
    assert any(f"collect of job {job.id} on {ACCOUNT}: PictureRefused (fail)" in line for line in lines), lines
    name = urlsplit(rig.stand_in.picture_link(prompt)).path.removeprefix("/files/")
    assert rig.stand_in.served[name] == 1  # refused for good: not downloaded again
    with Session(rig.engine) as session:
        assert session.exec(select(Asset).where(col(Asset.job_id) == job.id)).first() is None
    rig.next_job_succeeds(prompt)


@pytest.mark.parametrize("prompt", ["bigpoll", "gzipbomb"], ids=["200 MB poll answer", "gzip bomb"])
def test_a_poll_answer_past_the_cap_is_never_read_whole_and_fails_its_tasks(rig: Rig, prompt: str):
    job = rig.run(prompt)

    lines = _common(rig, job)
    cap = Settings.model_fields["max_answer_bytes"].default
    assert job.state == "failed"
    assert job.error == f"{ACCOUNT}: a poll the provider will not answer: 127.0.0.1 answered more than {cap} bytes"
    assert any(f"job(s) {job.id} on {ACCOUNT}: AnswerTooLarge (fail)" in line for line in lines), lines
    task_id = next(task for task, made_for in rig.stand_in.tasks.items() if made_for == prompt)
    assert rig.stand_in.polls[task_id] == 1  # a clear, final answer: not asked again
    if prompt == "bigpoll":
        assert rig.stand_in.sent["bigpoll"] < BIG / 4  # hung up near the cap, not at the end
    rig.next_job_succeeds(prompt)


def test_a_200_mb_submit_answer_is_a_lost_answer_settled_without_paying_twice(rig: Rig):
    job = rig.run("bigsubmit")

    lines = _common(rig, job)
    cap = Settings.model_fields["max_answer_bytes"].default
    assert job.state == "failed"
    assert job.error == (
        f"{ACCOUNT}: 127.0.0.1 answered more than {cap} bytes; the request may have been taken; "
        "not found at the provider; not sent again (on_uncertain: fail)"
    )
    assert any(f"submit of job {job.id} on {ACCOUNT}: AnswerTooLarge (uncertain)" in line for line in lines), lines
    assert rig.stand_in.generated["bigsubmit"] == 1
    assert rig.stand_in.sent["bigsubmit"] < BIG / 4
    rig.next_job_succeeds("bigsubmit")


def test_a_cut_submit_answer_is_found_in_the_providers_history_and_its_picture_taken(rig: Rig):
    job = rig.run("cutsubmit")

    lines = _common(rig, job)
    assert (job.state, job.error, job.lost_answers) == ("succeeded", None, 1)
    assert job.adopted is not None and job.adopted.startswith("hist_task_")
    assert any(f"submit of job {job.id} on {ACCOUNT}: AnswerLost (uncertain)" in line for line in lines), lines
    with Session(rig.engine) as session:
        events = session.exec(select(JobEvent.event, JobEvent.detail).where(col(JobEvent.job_id) == job.id)).all()
    lost = [detail for event, detail in events if event == "answer lost"]
    assert lost and "the connection closed mid-answer" in lost[0], events
    assert rig.stand_in.generated["cutsubmit"] == 1  # found, never sent again
    rig.next_job_succeeds("cutsubmit")


def test_a_cut_poll_answer_is_asked_again_and_the_job_succeeds(rig: Rig):
    job = rig.run("cutpoll")

    lines = _common(rig, job)
    assert (job.state, job.error) == ("succeeded", None)
    task_id = next(task for task, made_for in rig.stand_in.tasks.items() if made_for == "cutpoll")
    assert rig.stand_in.polls[task_id] == 2
    assert any(f"job(s) {job.id} on {ACCOUNT}: Transient (retry)" in line for line in lines), lines
    assert any("the connection closed mid-answer" in line for line in lines), lines
    rig.next_job_succeeds("cutpoll")


@pytest.mark.parametrize(
    ("prompt", "words", "never"),
    [
        ("loopback", "refused before connecting: 127.0.0.1 is a loopback address", None),
        ("private", f"refused before connecting: {PRIVATE} is a private address", PRIVATE),
        ("metadata", f"refused before connecting: {METADATA} is a cloud metadata address", METADATA),
        ("redirect", "redirected to http://127.0.0.1:{port}/x.png, refused before connecting: 127.0.0.1 is a "
                     "loopback address", None),
    ],
    ids=["loopback", "private address", "metadata service", "redirect to loopback"],
)  # fmt: skip
def test_a_picture_link_to_where_genq_must_not_go_is_refused_before_any_connection(
    rig: Rig, prompt: str, words: str, never: str | None
):
    before = len(rig.connected())
    job = rig.run(prompt)

    lines = _common(rig, job)
    assert job.state == "failed"
    assert words.format(port=rig.loopback.port) in (job.error or ""), job.error
    assert any(f"collect of job {job.id} on {ACCOUNT}: PictureRefused (fail)" in line for line in lines), lines
    connected = rig.connected()[before:]
    assert ("127.0.0.1", rig.stand_in.server_address[1]) in connected  # the observer sees the worker's connects
    assert [c for c in connected if c[1] == rig.loopback.port or c[0] in (PRIVATE, METADATA)] == []
    assert rig.loopback.connections() == 0
    if prompt == "redirect":
        assert rig.stand_in.served["hop.png"] == 1
    rig.next_job_succeeds(prompt)


def test_a_file_reference_is_refused_when_the_batch_file_is_loaded_and_nothing_is_written(rig: Rig):
    source = rig.tmp / "refs.yaml"
    source.write_text(
        "defaults: {provider: gencraft, mode: edit}\njobs:\n"
        "  - {prompt: a chair, references: ['http://93.184.215.14/chair.png']}\n"
        "  - {prompt: a table, references: ['file:///etc/passwd']}\n"
    )
    with Session(rig.engine) as session:
        batches = session.exec(select(func.count()).select_from(Batch)).one()

    done = subprocess.run([sys.executable, "-m", "jobs.cli", "submit", str(source)], cwd=ROOT,
                          env={**os.environ, **rig.env}, capture_output=True, text=True, timeout=60)  # fmt: skip

    said = " ".join(done.stderr.split())  # as the terminal wraps it, unwrapped
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{source}:4: references: 'file:///etc/passwd' is refused" in said, said
    assert "file: URLs are refused; only http and https are fetched" in said
    assert f"{source}:3:" not in said and "nothing was submitted" in said
    with Session(rig.engine) as session:
        assert session.exec(select(func.count()).select_from(Batch)).one() == batches
    assert rig.stand_in.uploads == 0
    rig.next_job_succeeds("file reference")


def test_the_worker_peak_memory_stayed_under_300_mb_through_every_case(rig: Rig):
    peak = max(tree_peak(rig.worker.process.pid).values())
    print(f"\nworker peak memory (VmHWM): {peak / 2**20:.0f} MB; after each case:",
          {case: f"{value / 2**20:.0f} MB" for case, value in rig.peaks.items()})  # fmt: skip
    assert rig.peaks and peak < MEMORY_CEILING
