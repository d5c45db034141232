"""Where finished pictures and manifests live: local files, S3 or memory, through obstore.

obstore already gives one API over all three, so genq keeps only a thin wrapper that turns its errors
into ``StorageError`` (``storage_error``, the one translation) and says where a key can be found by a
person.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, MemoryStore, ObjectStore, from_url

from jobs.errors import StorageError


class Storage:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = urlparse(url)
        self.store: ObjectStore
        if parsed.scheme == "file":
            self.root: Path | None = Path(parsed.netloc + parsed.path)
            self.root.mkdir(parents=True, exist_ok=True)
            self.store = LocalStore(self.root)
        elif parsed.scheme == "memory":
            self.root = None
            self.store = MemoryStore()
        else:
            self.root = None
            try:
                self.store = from_url(url)
            except Exception as error:
                raise storage_error(error, f"cannot open storage {url}") from error

    def put(self, key: str, data: bytes) -> None:
        try:
            obstore.put(self.store, key, data)
        except Exception as error:
            raise storage_error(error, f"cannot write {key} to {self.url}") from error

    def get(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self.store, key).bytes())
        except Exception as error:
            missing = f"{key} is not in {self.url}"
            raise storage_error(error, f"cannot read {key} from {self.url}", missing=missing) from error

    def where(self, key: str = "") -> str:
        """A location a person can open: a path for local files, the URL otherwise."""
        if self.root is not None:
            return str(self.root / key) if key else str(self.root)
        # Joined without stripping the URL, so ``memory://`` stays a URL (``memory://key``, not ``memory:/key``).
        return f"{self.url}{key}" if self.url.endswith("/") else f"{self.url}/{key}"


def storage_error(error: Exception, attempt: str, *, missing: str = "") -> StorageError:
    """obstore's ``error`` as genq's. ``attempt`` says what failed ("cannot read K from S"); ``missing``,
    where one is given, replaces it when the answer is that the object is not there.

    The store's methods bring every ``Exception`` here: obstore raises its own classes
    (``obstore.exceptions``) and builtin ones too (``FileNotFoundError`` for a missing object,
    ``ValueError`` for a path it cannot take, ``OSError`` from a local disk). Only the first line of
    its message is kept; the rest is a debug dump of the request, which may spell out the store's URL.
    """
    if missing and isinstance(error, FileNotFoundError | NotFoundError):
        return StorageError(missing)
    first = next(iter(str(error).strip().splitlines()), type(error).__name__)
    return StorageError(f"{attempt}: {first}")


def batch_folder(batch_id: int, name: str) -> str:
    """Every object of a batch lives below this prefix; the id keeps two batches of one name apart."""
    return f"{name}-{batch_id}"
