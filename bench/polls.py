"""Requests per image: 200 jobs whose pictures take 20 s +- 5 s. genq's planned polling (first poll
when a task is likely done, learned by the fleet) beside the loop in the girlgenerator document
(a poll every 5 s per task), both against the sandbox, over the floor of one submit and one poll
(one twentieth of a poll for gencraft, which answers 20 tasks a request).

The fleet learns its first-poll delay from a warm-up batch first, as a deployment that has run
before has; the figures are those of the measured batch alone.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from bench.fleet import fleet
from sandbox.config import ProviderConfig, SandboxConfig

JOBS = int(os.environ.get("GENQ_BENCH_POLL_JOBS", "200"))
WARM_UP = int(os.environ.get("GENQ_BENCH_POLL_WARM_UP", "60"))
GENERATION = ProviderConfig(latency_mean=20.0, latency_jitter=5.0)
DOCUMENT_POLL_EVERY = 5.0
FLOOR = {"girlgenerator": 2.0, "gencraft": 1.0 + 1 / 20}


def genq_requests_per_image(provider: str) -> float:
    config = SandboxConfig(image_long_side=64, providers={provider: GENERATION})
    account = {"name": f"{provider}-1", "provider": provider, "rpm": 1_000_000, "max_in_flight": 1_000}
    with fleet(config, [account], workers=2) as f:
        f.run(f.batch("warm-up", [f"warm-up picture {n}" for n in range(WARM_UP)], provider))
        since = time.time()
        status, _ = f.run(f.batch("measured", [f"catalog picture {n}" for n in range(JOBS)], provider))
        if status.state != "succeeded":
            raise SystemExit(f"the measured {provider} batch did not succeed: {status.counts}")
        return len(f.keyed_requests(provider, since)) / status.images


def document_loop_requests_per_image() -> float:
    """The girlgenerator document's client: submit, then poll the task every 5 s until it is done."""
    from sandbox.server import SandboxServer

    config = SandboxConfig(image_long_side=64, providers={"girlgenerator": GENERATION})
    with SandboxServer(config) as sandbox, httpx.Client(timeout=30) as client:
        base = sandbox.base_url("girlgenerator")
        headers = {"Authorization": "Bearer doc-loop-key"}

        def one(n: int) -> int:
            answer = client.post(f"{base}/api/v1/generate", headers=headers,
                                 json={"scene": "text-to-image", "prompt": f"catalog picture {n}"})  # fmt: skip
            task_id = answer.json()["task_id"]
            requests = 1
            while True:
                time.sleep(DOCUMENT_POLL_EVERY)
                requests += 1
                status = client.get(f"{base}/api/v1/tasks/{task_id}", headers=headers).json()["status"]
                if status in ("success", "failed"):
                    return requests

        with ThreadPoolExecutor(max_workers=JOBS) as pool:
            return sum(pool.map(one, range(JOBS))) / JOBS


def main() -> None:
    girl = genq_requests_per_image("girlgenerator")
    gencraft = genq_requests_per_image("gencraft")
    document = document_loop_requests_per_image()
    print(f"requests per image: {JOBS} jobs of 20 s +- 5 s (after a warm-up of {WARM_UP})")
    print(f"  girlgenerator, genq           {girl:6.3f} requests/image, "
          f"{girl / FLOOR['girlgenerator']:.3f} x the floor of 2 (goal 1.1 or less)")  # fmt: skip
    print(f"  girlgenerator, document loop  {document:6.3f} requests/image, "
          f"{document / FLOOR['girlgenerator']:.3f} x the floor")  # fmt: skip
    print(f"  gencraft, genq                {gencraft:6.3f} requests/image, "
          f"{gencraft / FLOOR['gencraft']:.3f} x the floor of 1 + 1/20 (goal 1.1 or less)")  # fmt: skip


if __name__ == "__main__":
    main()
