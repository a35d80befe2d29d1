"""The category embedding table shipped in a model bundle. numpy and the standard library only.

Known categories have a learned unit vector. Any other id gets a deterministic unit vector
derived from SHA-256 of the id, so an unseen category still means the same thing in every
process and every run (and a profile never stores vectors, only category weights).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streams.errors import DataError

EMBEDDING_DIM = 16
MAX_FALLBACKS = 100_000  # hashed vectors of unknown categories kept per table
EMBEDDINGS_FORMAT_VERSION = 1


def hashed_vector(category_id: str, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """A unit float32 vector that depends only on ``category_id`` (no RNG, no numpy version)."""
    needed = 4 * dim
    raw = b""
    counter = 0
    while len(raw) < needed:
        raw += hashlib.sha256(counter.to_bytes(4, "little") + category_id.encode("utf-8")).digest()
        counter += 1
    ints = np.frombuffer(raw[:needed], dtype="<u4").astype(np.float64)
    vec = ints / 2.0**31 - 1.0  # uniform in [-1, 1)
    norm = float(np.sqrt(vec @ vec))
    if norm == 0.0:  # pragma: no cover - needs 16 exact hash hits
        vec[0], norm = 1.0, 1.0
    return (vec / norm).astype(np.float32)


class CategoryEmbeddings:
    """Category ids and a float32 matrix ``(n, EMBEDDING_DIM)``, with a hashed fallback."""

    __slots__ = ("_index", "_rows", "_table", "_used", "ids", "matrix")

    def __init__(self, ids: Sequence[str], matrix: np.ndarray) -> None:
        matrix = np.asarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(ids), EMBEDDING_DIM):
            raise ValueError(
                f"embedding matrix has shape {matrix.shape}; expected ({len(ids)}, {EMBEDDING_DIM})"
            )
        if not np.isfinite(matrix).all():
            raise ValueError("embedding matrix has non-finite values")
        self.ids: tuple[str, ...] = tuple(str(i) for i in ids)
        self._index = {cid: row for row, cid in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise ValueError("embedding ids are not unique")
        self.matrix = matrix.copy()
        self.matrix.setflags(write=False)
        # Every vector handed out, in one table: the learned rows, then the hashed fallbacks of
        # the unknown categories met so far (``_rows``: category -> row), so ``vectors`` is one
        # gather, with no Python per unknown category.
        self._reset_fallbacks()

    def _reset_fallbacks(self) -> None:
        self._rows: dict[str, int] = dict(self._index)
        self._table = np.empty((max(2 * len(self.ids), 1024), EMBEDDING_DIM), dtype=np.float32)
        self._table[: len(self.ids)] = self.matrix
        self._used = len(self.ids)

    def _fallback_row(self, category_id: str) -> int:
        """The table row of an unknown category's hashed vector (added the first time)."""
        if self._used - len(self.ids) >= MAX_FALLBACKS:  # bound it for long-running workers
            self._reset_fallbacks()
        if self._used == len(self._table):
            grown = np.empty((2 * len(self._table), EMBEDDING_DIM), dtype=np.float32)
            grown[: self._used] = self._table[: self._used]
            self._table = grown
        row = self._used
        self._table[row] = hashed_vector(category_id)
        self._rows[category_id] = row
        self._used += 1
        return row

    @classmethod
    def empty(cls) -> CategoryEmbeddings:
        """A table with no learned vectors: every category uses its hashed vector."""
        return cls([], np.zeros((0, EMBEDDING_DIM), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._index

    def vector(self, category_id: str) -> np.ndarray:
        """The vector of one category (learned, or the hashed fallback). Read-only float32."""
        row = self._rows.get(category_id)
        if row is None:
            row = self._fallback_row(category_id)
        vec = self._table[row]  # a view: a row, once written, never changes
        vec.setflags(write=False)
        return vec

    def _lookup(self, category_ids: Sequence[str]) -> np.ndarray:
        get = self._rows.get
        return np.fromiter(
            (get(cid, -1) for cid in category_ids), dtype=np.intp, count=len(category_ids)
        )

    def vectors(self, category_ids: Sequence[str]) -> np.ndarray:
        """Vectors of many categories, float32 ``(len(category_ids), EMBEDDING_DIM)``."""
        rows = self._lookup(category_ids)
        missing = np.flatnonzero(rows < 0).tolist()
        if not missing:
            return self._table[rows]
        if self._used - len(self.ids) + len(missing) > MAX_FALLBACKS:
            self._reset_fallbacks()
            rows = self._lookup(category_ids)
            missing = np.flatnonzero(rows < 0).tolist()
        if len(missing) > MAX_FALLBACKS:  # more unknown categories in one call than are kept
            out = self._table[np.maximum(rows, 0)]
            for i in missing:
                out[i] = hashed_vector(category_ids[i])
            return out
        for i in missing:
            cid = category_ids[i]
            row = self._rows.get(cid)  # an unknown category seen earlier in this call
            rows[i] = row if row is not None else self._fallback_row(cid)
        return self._table[rows]

    def save(self, path: Path) -> None:
        """Write an ``.npz`` (ids, matrix, format version), atomically."""
        save_npz_atomically(
            Path(path),
            ids=np.array(self.ids, dtype=np.str_),
            matrix=self.matrix,
            format_version=np.array(EMBEDDINGS_FORMAT_VERSION),
        )

    @classmethod
    def load(cls, path: Path) -> CategoryEmbeddings:
        """Read what ``save`` wrote; DataError naming the file if it is not that."""
        path = Path(path)
        try:
            # Open the file ourselves: np.load(path) leaks its handle when the zip is corrupt.
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
                version = int(npz["format_version"])
                ids = [str(i) for i in npz["ids"]]
                matrix = np.array(npz["matrix"])
        except FileNotFoundError:
            raise DataError(f"embedding table {path} does not exist") from None
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as exc:
            raise DataError(f"embedding table {path} is unreadable: {exc}") from None
        if version != EMBEDDINGS_FORMAT_VERSION:
            raise DataError(
                f"embedding table {path} has format version {version}; "
                f"expected {EMBEDDINGS_FORMAT_VERSION}"
            )
        try:
            return cls(ids, matrix)
        except ValueError as exc:
            raise DataError(f"embedding table {path} is inconsistent: {exc}") from None


def save_npz_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` under a temporary name beside ``path`` and rename it into place, so a
    reader (a hot-reloading worker) never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as its own flags
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
