"""Every knob of genq, read from the environment (prefix ``GENQ_``).

With nothing set, genq runs on the embedded stack: SQLite and files under ``./var`` and a private
Redis started on demand. A deployment sets the URLs to its own services.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENQ_", extra="ignore")

    var_dir: Path = Path("var")
    """Where the embedded stack keeps its database, objects and Redis socket."""

    database_url: str | None = None
    """SQLAlchemy URL; unset means SQLite at ``<var_dir>/genq.db``."""

    redis_url: str | None = None
    """Broker and rate-limit store; unset means a private redis-server on a socket in ``var_dir``."""

    storage_url: str | None = None
    """``file://path``, ``s3://bucket/prefix`` or ``memory://``; unset means ``<var_dir>/objects``."""

    accounts: Path = Path("accounts.yaml")
    """The provider accounts file."""

    batches_dir: Path = Path("batches")
    """The drop folder: ``inbox/``, ``done/`` and ``failed/`` below it."""

    dispatch_interval: float = 2.0
    """Seconds between dispatcher rounds when nothing kicks it."""

    sweep_interval: float = 1.0
    """Seconds between poll sweeps."""

    reconcile_interval: float = 5.0
    """Seconds between reconciler passes: jobs whose wake-up was lost, whose holder died or whose
    lease ran out, lost answers to settle, batches to finish. Each pass is a few indexed queries."""

    stale_after: float = 120.0
    """Seconds a job may sit in collecting (or queued, with no lease) before the reconciler sends its
    wake-up again; a job whose holder is known dead is taken at once."""

    queued_lease: float = 30.0
    """Seconds a job claimed by admission may wait for its submit message before it is sent again."""

    lease_margin: float = 5.0
    """Seconds a submit's lease runs past its call time-out, for the write that records its answer."""

    settle_for: float = 120.0
    """Seconds after a lost submit's lease during which the provider's record is searched for it
    (where the provider keeps one) before the batch's ``on_uncertain`` policy decides."""

    max_resubmits: int = 2
    """How often one job is sent again after lost answers under ``on_uncertain: resubmit``."""

    poll_error_limit: int = 5
    """Polls in a row whose answer cannot be read before the task fails with that reason."""

    first_poll_delay: float | None = None
    """Seconds from submit to the first poll when nothing has been learned yet; unset means each
    provider's typical generation time, so a first wave is not polled long before its pictures can
    be done. Set it to poll sooner, as tests and a quick bench do."""

    max_poll_interval: float = 30.0
    """Seconds; the longest wait between two polls of one provider task."""

    max_task_age: float = 3600.0
    """Seconds a provider task may run before its job fails as timed out."""

    rate_window_margin: float = 0.25
    """Seconds added to the 60-second window of each key's limit, for the time a request takes to
    reach the provider: its token is taken right before the request is written, so it arrives within
    a few hundredths of a second; 0.25 s costs 0.4% of the allowance."""

    rate_spread: float = 10.0
    """Seconds over which each key's requests are paced: none of these stretches holds more than its
    share of the minute and a quarter (10 requests may always go at once). 0 lets a key's whole
    minute go in one burst, which the fleet often cannot repeat when the window frees it a minute on."""

    rotation_pause: float = 900.0
    """Seconds an account stays out of rotation after its key was refused or its balance ran out;
    then one job tries it again."""

    max_rotations: int = 4
    """Times one job may be refused by an account's key or balance before it fails with why: a key
    revoked for good, with no other account to take its jobs, must not keep a batch open forever."""

    submit_attempts: int = 3
    """How often a job is sent after a transient failure before it fails."""

    http_timeout: float = 20.0
    """Seconds to wait for a provider's answer (each read); a submit's lease is this plus
    ``lease_margin``, so a killed worker's job is found within about that. Synchronous providers
    (talecraft) wait longer, by their own account option."""

    max_answer_bytes: int = 2 * 1024 * 1024
    """The largest provider answer (after decoding) genq reads; past it a submit's answer is lost
    and a poll's tasks fail, and no more of it is read."""

    max_image_pixels: int = 64_000_000
    """The most pixels a picture may have; a larger one (or a decompression bomb) is refused
    before it is decoded."""

    max_image_bytes: int = 50 * 1024 * 1024
    """The largest image genq downloads; a larger answer is refused."""

    trusted_hosts: str = ""
    """``host:port`` entries, comma-separated, that genq may fetch from although they resolve to a
    private or loopback address (an internal image store, a proxy); each account's own ``base_url``
    is always allowed."""

    only_batch: int | None = None
    """When set, admission sends this batch's jobs and no other's: the worker ``genq run`` starts
    works on its own batch, and leaves other pending batches to a deployment."""

    def trusted(self) -> list[str]:
        return [entry.strip() for entry in self.trusted_hosts.split(",") if entry.strip()]

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.var_dir / 'genq.db').resolve()}"

    def resolved_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return f"file://{(self.var_dir / 'objects').resolve()}"

    def redis_socket(self) -> Path:
        """The unix socket of the embedded Redis."""
        return (self.var_dir / "redis.sock").resolve()

    def resolved_redis_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"redis+socket://{self.redis_socket()}"
