"""Data identity: a fingerprint of a dataset split's files, part of the trained model's identity.

Replacing or fixing the data under the same `dataset=` must not silently reuse a model trained
(or a tau calibrated) on the old copy, so the checkpoint key includes this fingerprint. It reads
cheaply even on ADE20K: the file count and total size (one stat per file), a hash of the sorted
file list (names relative to the split's common folder, with sizes) and a hash of the bytes of a
few evenly spaced files. A copy with identical files elsewhere gives the same fingerprint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SAMPLED_FILES = 8  # files whose bytes are hashed


def files_fingerprint(files: list[Path], sampled: int = SAMPLED_FILES) -> str:
    """Return '<count>f-<bytes>b-<hash>' for `files` (hash of names, sizes and sampled bytes)."""
    files = sorted(Path(f) for f in files)
    if not files:
        return "0f-0b-empty"
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    digest = hashlib.sha1()
    total = 0
    for path in files:
        size = path.stat().st_size
        total += size
        digest.update(f"{path.relative_to(root).as_posix()}\t{size}\n".encode())
    step = max(1, len(files) // sampled)
    for path in files[::step][:sampled]:
        digest.update(path.read_bytes())
    return f"{len(files)}f-{total}b-{digest.hexdigest()[:12]}"


def data_fingerprint(dataset) -> str:
    """Return the fingerprint of a dataset's image and label files (its `pairs`)."""
    pairs = getattr(dataset, "pairs", None)
    if pairs is None:
        return f"unknown:{type(dataset).__name__}:{len(dataset)}"
    return files_fingerprint([p for pair in pairs for p in pair])
