"""``python -m sandbox --port 8700``: the fake providers in the foreground, configured by GENQ_SANDBOX_*."""

from __future__ import annotations

import argparse

from sandbox.config import SandboxConfig
from sandbox.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8700, help="port to listen on (default 8700)")
    args = parser.parse_args(argv)
    print(f"sandbox on http://{args.host}:{args.port}/<provider>; stats at /_sandbox/stats", flush=True)
    serve(args.host, args.port, SandboxConfig.from_env())


if __name__ == "__main__":
    main()
