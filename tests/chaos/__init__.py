"""The chaos run (``make chaos``): an overnight batch in miniature, under every failure genq promises
to survive, judged by the provider's own record. See ``tests/chaos/run.py``."""
