"""One file format for every agent's model: a zip of ``meta.json``, ``.npy`` arrays and raw blobs.

Never pickle: JSON for settings and counters, ``.npy`` (read with ``allow_pickle=False``) for
numpy arrays, and ``torch.save`` blobs of plain tensor state dicts (read with
``weights_only=True``) for networks. A file with only ``meta.json`` and ``.npy`` members is also a
valid ``.npz``: ``numpy.load(path, allow_pickle=False)`` opens it (``meta.json`` comes back as
bytes). Files are written to a temporary name and renamed, so a crash never leaves half a model.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlbench.errors import UserError

FORMAT = "rlbench-agent"
VERSION = 1
#: versions this code reads: 2 is a file whose torch tensors are arrays (the numpy DQN's), so
#: that an older rlbench, which reads 1 only, names the version rather than a missing blob
VERSIONS = (1, 2)
META = "meta.json"


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` found in a model file."""

    algo: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)


def write_checkpoint(
    path: str | Path,
    algo: str,
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray] | None = None,
    blobs: Mapping[str, bytes] | None = None,
    version: int = VERSION,
) -> Path:
    """Write one model file atomically; ``arrays`` keys become ``<key>.npy`` members."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": version, "algo": algo, **meta}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(META, json.dumps(header, indent=1, sort_keys=True))
            for key, value in (arrays or {}).items():
                buf = io.BytesIO()
                np.save(buf, np.asarray(value), allow_pickle=False)
                zf.writestr(f"{key}.npy", buf.getvalue())
            for name, data in (blobs or {}).items():
                zf.writestr(name, data)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a failed flush names no file: say which one
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def peek_algo(path: str | Path) -> str:
    """The algorithm a model file holds (``UserError`` if it is not an rlbench model)."""
    return read_checkpoint(path).algo


def read_checkpoint(path: str | Path, expected_algo: str | None = None) -> Checkpoint:
    """Read and validate a model file written by :func:`write_checkpoint`.

    Raises ``UserError`` when the file is missing, is not an rlbench model (corrupt, truncated,
    another format), or holds a model of another algorithm than ``expected_algo``.
    """
    path = Path(path)
    what = f"rlbench {expected_algo}" if expected_algo else "rlbench"
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")

    def invalid(reason: str) -> UserError:
        return UserError(f"{path} is not a valid {what} model: {reason}")

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if META not in names:
                raise invalid(f"no {META} inside")
            meta = json.loads(zf.read(META).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise invalid(f"{META} does not describe an {FORMAT} file")
            if meta.get("version") not in VERSIONS:
                raise invalid(
                    f"format version {meta.get('version')!r}, expected one of {list(VERSIONS)} "
                    "(a file from a newer rlbench: upgrade to read it)"
                )
            algo = meta.get("algo")
            if not isinstance(algo, str):
                raise invalid("no algorithm name in it")
            if expected_algo is not None and algo != expected_algo:
                raise UserError(
                    f"{path} holds a {algo!r} model, not a {expected_algo!r} one; "
                    f"load it as algo={algo} (or load_agent reads the algorithm from the file)"
                )
            arrays: dict[str, np.ndarray] = {}
            blobs: dict[str, bytes] = {}
            for name in names:
                if name == META:
                    continue
                data = zf.read(name)  # checks the CRC: a corrupted member fails here
                if name.endswith(".npy"):
                    arrays[name[: -len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
                else:
                    blobs[name] = data
    except UserError:
        raise
    # zlib.error: damaged bytes inside a member that its CRC check never reaches (the member
    # fails to inflate first)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error) as exc:
        raise invalid(f"not a readable zip archive ({exc})") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # bad JSON, bad .npy, pickled arrays
        raise invalid(str(exc)) from exc
    return Checkpoint(algo=algo, meta=meta, arrays=arrays, blobs=blobs)


def require(ckpt: Checkpoint, path: str | Path, keys: list[str], arrays: list[str] = ()) -> None:
    """``UserError`` if the checkpoint lacks any meta ``keys`` or ``arrays`` its agent needs."""
    missing = [k for k in keys if k not in ckpt.meta] + [
        f"{a}.npy" for a in arrays if a not in ckpt.arrays
    ]
    if missing:
        raise UserError(
            f"{path} is not a valid rlbench {ckpt.algo} model: missing {', '.join(missing)}"
        )
