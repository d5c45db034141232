"""A fake provider farm on loopback: someone else's server that happens to live here.

It imports neither ``jobs`` nor ``workers`` and speaks only HTTP. Each provider API is served under its
own path prefix on one server (``/gencraft/api/v1/generate``); ``/_sandbox`` holds the farm's record
(``GET /_sandbox/stats``), a reset, and run-time config. ``SandboxServer`` runs it in a thread,
``serve`` in the foreground, ``create_app`` gives the ASGI app itself.

Modules: ``config`` (how providers behave), ``state`` (the world in memory), ``stats`` (the record),
``ratelimit``, ``images`` (drawn PNGs), ``fetch`` (uploads), ``api`` (the frame every provider module
fills in), one module per provider (``gencraft``), ``control`` (``/_sandbox``), ``app``, ``server``.
"""
