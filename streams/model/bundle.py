"""A model bundle: its one reader (``load_bundle``) and its one writer (``BundleWriter``).

A bundle is a directory (usually reached through the ``models/current`` symlink) holding
``model.onnx``, ``metadata.json``, ``embeddings.npz`` and, from bundles trained with reasons on,
``reference.npz`` (the training mean and histograms of every feature: the reference of reasons
and of drift). A bundle without it serves as before, without reasons or drift. Bundles trained
with exploration arms carry ``arms.npz`` (clusters of categories and their population prior,
``streams.features.arms``); without it, exploration is off. Reading checks
it against this worker's feature spec and serves it with onnxruntime and numpy only: the worker
never imports TensorFlow. Writing assembles it in a hidden directory beside its destination and
renames it into place, and switches the link by renaming a new symlink over the old one; both
renames are atomic on POSIX file systems, so a hot-reloading worker never sees half a bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import onnxruntime as ort

from streams.errors import (
    DataError,
    FeatureSpecMismatchError,
    ModelCorruptError,
    ModelNotFoundError,
)
from streams.features import FEATURE_SPEC, CategoryEmbeddings
from streams.features.arms import Arms
from streams.features.reference import Reference

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
EMBEDDINGS_FILE = "embeddings.npz"
REFERENCE_FILE = "reference.npz"
ARMS_FILE = "arms.npz"
INPUT_NAME = "features"
OUTPUT_NAME = "purchase_probability"
_REQUIRED_METADATA = ("model_version", "feature_version", "feature_spec_hash", "feature_names")


@dataclass(frozen=True)
class ModelBundle:
    """A loaded, checked model bundle with its one onnxruntime session."""

    path: Path  # the resolved bundle directory
    model_version: str
    feature_version: str
    feature_spec_hash: str
    embeddings: CategoryEmbeddings
    metadata: dict[str, Any]
    session: ort.InferenceSession = field(repr=False, compare=False)
    # The training reference (reasons, drift); None for bundles trained before it existed.
    reference: Reference | None = field(default=None, repr=False, compare=False)
    # The exploration arms; None for bundles trained before them (exploration is then off).
    arms: Arms | None = field(default=None, repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return len(FEATURE_SPEC.names)

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - X is the usual name
        """Purchase probabilities for a batch of feature rows: float32 ``(n,)`` in [0, 1]."""
        x = np.ascontiguousarray(X, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected features of shape (n, {self.n_features}), got {x.shape}")
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        probs = np.asarray(out, dtype=np.float32).reshape(-1)
        if probs.shape[0] != x.shape[0] or not np.isfinite(probs).all():
            bad = int((~np.isfinite(probs)).sum())
            raise ModelCorruptError(
                f"model {self.path / MODEL_FILE} returned {bad} non-finite probabilities "
                f"for {x.shape[0]} rows (shape {probs.shape})"
            )
        return np.clip(probs, 0.0, 1.0)


def _session(model_path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad models
        raise ModelCorruptError(f"model file {model_path} cannot be loaded: {exc}") from None


def _check_signature(session: ort.InferenceSession, model_path: Path, n_features: int) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    got_in = [(i.name, i.shape, i.type) for i in inputs]
    got_out = [(o.name, o.shape, o.type) for o in outputs]
    ok_in = (
        len(inputs) == 1
        and inputs[0].name == INPUT_NAME
        and inputs[0].type == "tensor(float)"
        and len(inputs[0].shape) == 2
        and inputs[0].shape[1] == n_features
        and not isinstance(inputs[0].shape[0], int)  # dynamic batch axis
    )
    ok_out = (
        len(outputs) == 1
        and outputs[0].name == OUTPUT_NAME
        and outputs[0].type == "tensor(float)"
        and len(outputs[0].shape) == 2
        and outputs[0].shape[1] == 1
    )
    if not (ok_in and ok_out):
        raise ModelCorruptError(
            f"model file {model_path} has the wrong signature: expected input "
            f"'{INPUT_NAME}' float (batch, {n_features}) and output '{OUTPUT_NAME}' float "
            f"(batch, 1); got inputs {got_in} and outputs {got_out}"
        )


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelCorruptError(f"bundle file {path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelCorruptError(f"bundle file {path} is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ModelCorruptError(f"bundle file {path} must hold a JSON object")
    missing = [key for key in _REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelCorruptError(f"bundle file {path} lacks {', '.join(missing)}")
    return metadata


def load_bundle(path: Path, *, threads: int = 1) -> ModelBundle:
    """Load and check a bundle; the error says which file is wrong and what was expected.

    ModelNotFoundError: nothing at ``path``. ModelCorruptError: a file is missing, unreadable
    or inconsistent. FeatureSpecMismatchError: trained on another feature spec.
    """
    given = Path(path)
    try:
        root = given.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise ModelNotFoundError(
            f"no model bundle at {given} (resolved: {given.resolve()})"
        ) from None
    if not root.is_dir():
        raise ModelNotFoundError(f"model bundle path {given} is not a directory ({root})")

    meta_path = root / METADATA_FILE
    metadata = _read_metadata(meta_path)
    expected = (FEATURE_SPEC.version, FEATURE_SPEC.hash)
    got = (str(metadata["feature_version"]), str(metadata["feature_spec_hash"]))
    if got != expected:
        raise FeatureSpecMismatchError(
            f"bundle {meta_path} was trained on feature spec version {got[0]} hash {got[1][:12]}; "
            f"this worker computes version {expected[0]} hash {expected[1][:12]}"
        )
    if list(metadata["feature_names"]) != list(FEATURE_SPEC.names):
        raise FeatureSpecMismatchError(
            f"bundle {meta_path} lists {len(metadata['feature_names'])} feature names that differ "
            f"from this worker's {len(FEATURE_SPEC.names)}, although the spec hash matches"
        )

    model_path = root / MODEL_FILE
    if not model_path.is_file():
        raise ModelCorruptError(f"bundle file {model_path} is missing")
    emb_path = root / EMBEDDINGS_FILE
    if not emb_path.is_file():
        raise ModelCorruptError(f"bundle file {emb_path} is missing")
    try:
        embeddings = CategoryEmbeddings.load(emb_path)
    except DataError as exc:
        raise ModelCorruptError(str(exc)) from None

    n_features = len(FEATURE_SPEC.names)
    reference = _read_reference(root / REFERENCE_FILE, n_features)
    arms = None
    if (root / ARMS_FILE).exists():
        try:
            arms = Arms.load(root / ARMS_FILE)
        except DataError as exc:
            raise ModelCorruptError(str(exc)) from None
    session = _session(model_path, threads)
    _check_signature(session, model_path, n_features)
    bundle = ModelBundle(
        path=root,
        model_version=str(metadata["model_version"]),
        feature_version=got[0],
        feature_spec_hash=got[1],
        embeddings=embeddings,
        metadata=metadata,
        session=session,
        reference=reference,
        arms=arms,
    )
    # A smoke run proves the graph executes and yields probabilities for any batch size.
    probe = bundle.predict(np.zeros((2, n_features), dtype=np.float32))
    if probe.shape != (2,):  # pragma: no cover - predict already checks the shape
        raise ModelCorruptError(f"model file {model_path} returned shape {probe.shape} for 2 rows")
    return bundle


def _read_reference(path: Path, n_features: int) -> Reference | None:
    """The bundle's reference, None when it has none (an older bundle); a bad one is corrupt."""
    if not path.exists():
        return None
    try:
        reference = Reference.load(path)
    except DataError as exc:
        raise ModelCorruptError(str(exc)) from None
    if reference.n_features != n_features:
        raise ModelCorruptError(
            f"bundle file {path} describes {reference.n_features} features; "
            f"the feature spec has {n_features}"
        )
    return reference


def bundle_fingerprint(path: Path) -> str | None:
    """A cheap identity for hot-reload polling: the resolved directory and the size and mtime
    of ``model.onnx`` and ``metadata.json``. None when the bundle or one of them is missing."""
    try:
        root = os.path.realpath(path)
        parts = [root]
        for name in (MODEL_FILE, METADATA_FILE):
            st = os.stat(os.path.join(root, name))
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    except OSError:
        return None
    return "|".join(parts)


class BundleWriter:
    """Stage a bundle beside ``out`` and publish it atomically; the only way bundles are made.

    ``out`` may contain ``{model_version}``, filled in at ``publish``. Used as a context
    manager, a bundle that was not published (an exception, a parity failure) leaves nothing.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staged = self.out.parent / f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.staged.mkdir()
        self.published: Path | None = None

    @property
    def model_path(self) -> Path:
        """Where the exporter writes ``model.onnx``."""
        return self.staged / MODEL_FILE

    def write_embeddings(self, embeddings: CategoryEmbeddings) -> None:
        embeddings.save(self.staged / EMBEDDINGS_FILE)

    def write_reference(self, reference: Reference) -> None:
        reference.save(self.staged / REFERENCE_FILE)

    def write_arms(self, arms: Arms) -> None:
        arms.save(self.staged / ARMS_FILE)

    def model_digest(self) -> str:
        """sha256 of the staged ``model.onnx`` (model versions carry its prefix)."""
        return sha256_file(self.model_path)

    def publish(self, metadata: dict[str, Any], *, link: Path | None = None) -> Path:
        """Write ``metadata.json``, move the bundle into place and point ``link`` at it."""
        missing = [key for key in _REQUIRED_METADATA if key not in metadata]
        if missing:
            raise ValueError(f"bundle metadata lacks {', '.join(missing)}")
        for name in (MODEL_FILE, EMBEDDINGS_FILE):
            if not (self.staged / name).is_file():
                raise ValueError(f"bundle {self.staged} has no {name} yet")
        (self.staged / METADATA_FILE).write_text(
            json.dumps(metadata, indent=2) + "\n", encoding="utf-8"
        )
        out = Path(str(self.out).replace("{model_version}", str(metadata["model_version"])))
        old = None
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
        os.rename(self.staged, out)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        self.published = out
        if link is not None:
            point_link(link, out)
        return out

    def abort(self) -> None:
        shutil.rmtree(self.staged, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.published is None:
            self.abort()


def point_link(link: Path, target: Path) -> None:
    """Make ``link`` a relative symlink to ``target``, switched atomically (a model roll)."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(Path(target).resolve(), link.parent.resolve())
    tmp = link.parent / f".{link.name}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(relative, tmp)
    os.replace(tmp, link)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
