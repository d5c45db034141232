"""Where finished pictures and manifests live: local files, S3 or memory, through obstore.

obstore already gives one API over all three, so genq keeps only a thin wrapper that turns its errors
into ``StorageError`` and says where a key can be found by a person.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import obstore
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
                raise StorageError(f"cannot open storage {url}: {error}") from error

    def put(self, key: str, data: bytes) -> None:
        try:
            obstore.put(self.store, key, data)
        except Exception as error:
            raise StorageError(f"cannot write {key} to {self.url}: {error}") from error

    def get(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self.store, key).bytes())
        except FileNotFoundError as error:
            raise StorageError(f"{key} is not in {self.url}") from error
        except Exception as error:
            raise StorageError(f"cannot read {key} from {self.url}: {error}") from error

    def where(self, key: str = "") -> str:
        """A location a person can open: a path for local files, the URL otherwise."""
        if self.root is not None:
            return str(self.root / key) if key else str(self.root)
        # Joined without stripping the URL, so ``memory://`` stays a URL (``memory://key``, not ``memory:/key``).
        return f"{self.url}{key}" if self.url.endswith("/") else f"{self.url}/{key}"


def batch_folder(batch_id: int, name: str) -> str:
    """Every object of a batch lives below this prefix; the id keeps two batches of one name apart."""
    return f"{name}-{batch_id}"
