"""The category embedding table: learned rows, and hashed fallbacks gathered like them."""

from __future__ import annotations

import numpy as np
import pytest

from streams.features import embeddings as emb
from streams.features.embeddings import EMBEDDING_DIM, CategoryEmbeddings, hashed_vector


def _table() -> CategoryEmbeddings:
    rng = np.random.default_rng(0)
    ids = [f"known-{i}" for i in range(8)]
    return CategoryEmbeddings(ids, rng.normal(size=(8, EMBEDDING_DIM)).astype(np.float32))


def test_vectors_gather_learned_rows_and_the_fallbacks_of_unknown_categories() -> None:
    table = _table()
    ids = ["known-3", "new-a", "known-0", "new-b", "new-a"] + [f"new-{i}" for i in range(3000)]
    got = table.vectors(ids)  # grows past the table's first allocation
    assert got.shape == (len(ids), EMBEDDING_DIM) and got.dtype == np.float32
    assert np.array_equal(got[0], table.matrix[3]) and np.array_equal(got[2], table.matrix[0])
    assert np.array_equal(got[1], hashed_vector("new-a")) and np.array_equal(got[4], got[1])
    for i, cid in enumerate(ids):
        assert np.array_equal(got[i], table.vector(cid))
    assert np.array_equal(table.vectors(ids), got)  # the second time from the table alone
    with pytest.raises(ValueError):
        table.vector("new-b")[0] = 1.0  # read-only


def test_the_fallbacks_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb, "MAX_FALLBACKS", 10)
    table = _table()
    first = table.vectors([f"a-{i}" for i in range(8)])
    later = table.vectors([f"b-{i}" for i in range(8)])  # over the bound: the table restarts
    assert table._used - len(table.ids) <= 10
    assert np.array_equal(first[5], hashed_vector("a-5"))
    assert np.array_equal(later[5], hashed_vector("b-5"))
    many = table.vectors([f"c-{i}" for i in range(25)] + ["known-1"])  # more than kept at all
    assert np.array_equal(many[24], hashed_vector("c-24"))
    assert np.array_equal(many[25], table.matrix[1])
