"""The interaction log: one JSON line per decision, append-only, partitioned by day, fsynced.

Layout: ``<dir>/date=YYYY-MM-DD/part-<pid>-<n>.jsonl``. Every part file starts with a header
line (``{"rlbench_log": 1, "env_id": ..., "obs_shape": [...], "n_actions": ...}``) so a reader
can refuse a log of another environment; then one record per decision (see :data:`COLUMNS`).

Why JSONL: the self-healing seed writes JSONL, any tool reads it, and appending a line is the
whole write path. Why batches with fsync: a decision server cannot afford a disk sync per
decision; :class:`LogWriter` keeps ``batch_size`` records (100, the seed's flush size) in memory
and writes them with ONE ``os.write`` followed by ``os.fsync``, so a killed writer loses at most
the records not yet flushed and never leaves a half-written record in the middle of a file. A
torn last line (a power cut inside the write) is skipped by the reader and counted.

Throughput: a record is encoded as it is appended, by orjson (numpy arrays and scalars
natively; the same JSON as the standard library's, about twice as fast: floats are most of what a
record costs). A full batch is handed to the kernel at once and fsynced by a group-commit thread
(:mod:`rlbench.offline.group_sync`) while the next batches are encoded; on a slow disk one fsync
covers several batches. So a killed writer process loses only its unwritten batch (what
``os.write`` handed to the kernel survives the process), a machine crash at most that and the
batches written since the last fsync returned (never more than ``MAX_LAG_BATCHES``: the writer
waits), and :meth:`LogWriter.flush` and :meth:`LogWriter.close` return only once everything is
fsynced. ``flushed`` counts fsynced records; ``written`` those handed to the kernel.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from rlbench.errors import UserError
from rlbench.offline.group_sync import GroupSync, write_all

FORMAT_KEY = "rlbench_log"
FORMAT_VERSION = 1
DEFAULT_BATCH = 100  # the self-healing seed's DataCollector flush size
MAX_LAG_BATCHES = 10  # batches written but not yet fsynced before the writer waits
#: the columns every record has (``context`` is free-form: user id, request id, ...)
COLUMNS = (
    "ts",  # unix seconds of the decision (UTC day = the partition)
    "episode",  # episode / session id (a string)
    "step",  # index of the decision within its episode
    "obs",
    "action",
    "propensity",  # the behaviour policy's probability of ``action`` in ``obs``
    "reward",
    "next_obs",
    "done",  # the episode ended after this decision (terminated or truncated)
    "terminal",  # it ended for real: no value after it (a time limit is done, not terminal)
    "policy",  # the behaviour policy's name
    "policy_version",
    "context",
)
HEADER_KEYS = ("env_id", "obs_shape", "n_actions")


def partition_dir(root: str | Path, ts: float) -> Path:
    """The day folder of a record with unix time ``ts`` (UTC)."""
    day = dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")
    return Path(root) / f"date={day}"


class LogWriter:
    """Append decisions to a day-partitioned log; flush every ``batch_size`` records with fsync.

    One writer per process (file names carry the pid and a counter, opened exclusively, so
    writers never share a file). Use as a context manager, or call :meth:`close`, to flush the
    last partial batch.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        env_id: str,
        obs_shape: Sequence[int],
        n_actions: int,
        batch_size: int = DEFAULT_BATCH,
        fsync: bool = True,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.root = Path(root)
        self.header = {
            FORMAT_KEY: FORMAT_VERSION,
            "env_id": str(env_id),
            "obs_shape": [int(d) for d in obs_shape],
            "n_actions": int(n_actions),
            **dict(meta or {}),
        }
        self.batch_size = batch_size
        self.fsync = fsync
        self._sync = GroupSync(max_lag=MAX_LAG_BATCHES * batch_size, fsync=fsync)
        self._pending: list[bytes] = []
        self._pending_day: Path | None = None
        self._day_start = math.inf  # unix time of the pending day's midnight (UTC)
        self._fd: int | None = None
        self._day: Path | None = None
        self._parts = 0
        self.files: list[Path] = []

    # -- writing ------------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> None:
        """Queue one decision (a mapping with :data:`COLUMNS`; missing ``ts``: now)."""
        if "ts" not in record:
            record = {"ts": time.time(), **record}
        ts = float(record["ts"])
        if not self._day_start <= ts < self._day_start + 86400.0:
            self.flush()  # a batch never spans two days
            self._pending_day = partition_dir(self.root, ts)
            self._day_start = ts - ts % 86400.0  # UTC days are whole multiples of 86400 s
        self._pending.append(_encode(record))
        if len(self._pending) >= self.batch_size:
            self._flush(wait=False)

    def append_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`append` each record."""
        for record in records:
            self.append(record)

    @property
    def written(self) -> int:
        """Records handed to the kernel: they survive this process being killed."""
        return self._sync.written

    @property
    def flushed(self) -> int:
        """Records durably written (fsynced; with ``fsync=False``, written)."""
        return self._sync.synced

    def flush(self) -> None:
        """Write the pending records with one ``os.write`` and wait for their fsync; on return
        every record appended so far is durable."""
        self._flush(wait=True)

    def _flush(self, *, wait: bool) -> None:
        """Write the pending batch at once; the group-commit thread fsyncs it (and any batches
        written meanwhile) while the next batches are encoded."""
        if self._pending:
            assert self._pending_day is not None
            fd = self._file_for(self._pending_day)
            n = len(self._pending)
            self._pending.append(b"")  # the batch ends with a newline
            data = b"\n".join(self._pending)
            self._pending.clear()
            self._sync.write(fd, data, n)
        if wait:
            self._sync.wait_all()

    def close(self) -> None:
        """Flush the last partial batch, wait for its fsync and close the file."""
        try:
            self.flush()
        finally:
            self._sync.close()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _file_for(self, day: Path) -> int:
        if self._fd is not None and day == self._day:
            return self._fd
        if self._fd is not None:
            self._sync.wait_all()  # never close a file with unsynced records
            os.close(self._fd)
            self._fd = None
        day.mkdir(parents=True, exist_ok=True)
        while True:  # exclusive create: a reused pid never appends to another writer's part
            self._parts += 1
            path = day / f"part-{os.getpid()}-{self._parts}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                continue
        write_all(fd, (json.dumps(self.header) + "\n").encode())
        if self.fsync:
            os.fsync(fd)
            dir_fd = os.open(day, os.O_RDONLY)  # the new file's name is durable too
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._fd, self._day = fd, day
        self.files.append(path)
        return fd


def _jsonable(value: Any) -> Any:
    """What orjson cannot encode itself: numpy arrays it refuses (non-contiguous, other
    dtypes) and numpy scalars."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _encode(record: Mapping[str, Any]) -> bytes:
    """One record as one compact JSON line (no newline). NaN and infinities become ``null``
    (strict JSON); the reader then names the record and the column."""
    return orjson.dumps(record, default=_jsonable, option=_OPTIONS)


# --------------------------------------------------------------------------- reading


@dataclass
class InteractionLog:
    """A validated log as arrays, one row per decision, in file order.

    ``episode`` holds integer codes (``episode_ids[code]`` is the original id); ``files`` the
    part files read; ``torn`` the number of torn last lines skipped.
    """

    env_id: str
    obs_shape: tuple[int, ...]
    n_actions: int
    ts: np.ndarray
    episode: np.ndarray
    step: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    done: np.ndarray
    terminal: np.ndarray
    policy: list[str]
    context: list[dict[str, Any]]
    episode_ids: list[str]
    files: list[Path] = field(default_factory=list)
    torn: int = 0

    def __len__(self) -> int:
        return len(self.action)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ids)

    def subset(self, mask: np.ndarray) -> InteractionLog:
        """The decisions where ``mask`` is true (episode codes renumbered)."""
        idx = np.flatnonzero(mask)
        codes, new = np.unique(self.episode[idx], return_inverse=True)
        return InteractionLog(
            self.env_id,
            self.obs_shape,
            self.n_actions,
            self.ts[idx],
            new.astype(np.int64),
            self.step[idx],
            self.obs[idx],
            self.action[idx],
            self.propensity[idx],
            self.reward[idx],
            self.next_obs[idx],
            self.done[idx],
            self.terminal[idx],
            [self.policy[i] for i in idx],
            [self.context[i] for i in idx],
            [self.episode_ids[c] for c in codes],
            self.files,
            self.torn,
        )

    def user_ids(self, key: str = "user_id") -> np.ndarray:
        """``context[key]`` per decision as strings (``""`` where absent)."""
        return np.array([str(c.get(key, "")) if c else "" for c in self.context], dtype=object)

    def dataset_digest(self) -> str:
        """A short content hash: the same decisions give the same digest (MLflow dataset)."""
        import hashlib

        h = hashlib.sha256()
        for arr in (self.ts, self.step, self.obs, self.action, self.propensity, self.reward):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def log_files(path: str | Path) -> list[Path]:
    """The part files of a log: ``path`` itself if it is a file, else every ``*.jsonl`` below
    it (sorted); ``UserError`` if there is nothing there."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.exists():
        raise UserError(f"{p}: no such log (a folder of date=YYYY-MM-DD/part-*.jsonl files)")
    files = sorted(p.rglob("*.jsonl"))
    if not files:
        raise UserError(f"{p}: no *.jsonl log files in it")
    return files


COLLECTION_KEY = "collection"  # header: which collection into a log folder wrote the file


def collections_in(root: str | Path) -> int:
    """How many collections wrote into the log folder ``root`` so far (0 for none): the highest
    ``collection`` number in its part files' headers, or, for files from before that number,
    one per writing process (``part-<pid>-...``)."""
    root = Path(root)
    if not root.is_dir():
        return 0
    numbered, pids = 0, set()
    for path in root.rglob("part-*.jsonl"):
        try:
            with path.open("rb") as f:
                header = json.loads(f.readline() or b"{}")
        except (OSError, ValueError):
            header = {}
        number = header.get(COLLECTION_KEY) if isinstance(header, dict) else None
        if isinstance(number, int) and not isinstance(number, bool):
            numbered = max(numbered, number)
        else:
            pids.add(path.name.split("-")[1] if path.name.count("-") >= 2 else path.name)
    return max(numbered, len(pids))


def _day_of(path: Path) -> dt.date | None:
    for part in path.parts:
        if part.startswith("date="):
            try:
                return dt.date.fromisoformat(part[5:])
            except ValueError:
                return None
    return None


def write_log(data: InteractionLog, root: str | Path, *, fsync: bool = False) -> Path:
    """Write ``data`` as a log under ``root`` (a subset to train on, say): the same records,
    read back equal by :func:`read_log`. No fsync by default: such a copy can be made again."""
    with LogWriter(
        root,
        env_id=data.env_id,
        obs_shape=data.obs_shape,
        n_actions=data.n_actions,
        batch_size=1000,
        fsync=fsync,
    ) as writer:
        for i in range(len(data)):
            name, _, version = data.policy[i].rpartition(":")  # read_log joined them
            writer.append(
                {
                    "ts": float(data.ts[i]),
                    "episode": data.episode_ids[data.episode[i]],
                    "step": int(data.step[i]),
                    "obs": data.obs[i],
                    "action": int(data.action[i]),
                    "propensity": float(data.propensity[i]),
                    "reward": float(data.reward[i]),
                    "next_obs": data.next_obs[i],
                    "done": bool(data.done[i]),
                    "terminal": bool(data.terminal[i]),
                    "policy": name,
                    "policy_version": version,
                    "context": data.context[i],
                }
            )
    return Path(root)


def read_log(
    path: str | Path,
    *,
    env_id: str | None = None,
    obs_shape: Sequence[int] | None = None,
    n_actions: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> InteractionLog:
    """Read and validate a log (a folder or one part file), optionally within ``[start, end)``
    unix seconds. Every problem is a one-line ``UserError`` naming the file (and the line):
    missing columns, propensities outside (0, 1], actions outside the action space,
    observations of another shape, a log of another environment than ``env_id``, an empty
    window. A torn LAST line of a file (a write cut short) is skipped and counted in ``torn``.
    """
    root = Path(path)
    files = log_files(root)
    if start is not None or end is not None:  # skip whole days outside the window
        lo = dt.datetime.fromtimestamp(start, dt.UTC).date() if start is not None else None
        hi = dt.datetime.fromtimestamp(end, dt.UTC).date() if end is not None else None
        files = [
            f
            for f in files
            if (d := _day_of(f)) is None or ((lo is None or d >= lo) and (hi is None or d <= hi))
        ]
    header: dict[str, Any] | None = None
    header_file: Path | None = None
    rows: list[dict[str, Any]] = []
    torn = 0
    for f in files:
        h, recs, cut = _read_file(f)
        torn += cut
        if header is None:
            header, header_file = h, f
        else:
            for key in HEADER_KEYS:
                if h.get(key) != header.get(key):
                    raise UserError(
                        f"{f}: {key} {h.get(key)!r} differs from {header.get(key)!r} in "
                        f"{header_file}: one log holds one environment's decisions"
                    )
        for line_no, rec in recs:
            rec["_where"] = (f, line_no)
            rows.append(rec)
    window = "" if start is None and end is None else f" in [{start}, {end})"
    if header is None:
        raise UserError(f"{root}: no decisions{window}: the log or its window is empty")
    where = header_file
    want = {"env_id": env_id, "obs_shape": obs_shape, "n_actions": n_actions}
    for key, expected in want.items():
        if expected is None:
            continue
        got = header[key]
        expected = list(expected) if key == "obs_shape" else expected
        if got != expected:
            raise UserError(
                f"{where}: the log is from {header['env_id']} (obs_shape {header['obs_shape']}, "
                f"{header['n_actions']} actions), not {key}={expected!r}: collect a log of this "
                "environment"
            )
    if start is not None or end is not None:
        lo_t = -math.inf if start is None else start
        hi_t = math.inf if end is None else end
        rows = [r for r in rows if lo_t <= float(r["ts"]) < hi_t]
    if not rows:
        raise UserError(f"{root}: no decisions{window}: the log or its window is empty")
    return _to_arrays(rows, header, files, torn)


def _loads(line: bytes) -> Any:
    """orjson's parse (several times the standard library's); a line it refuses goes to the
    standard library, which also reads the ``NaN`` tokens of logs written before orjson and
    raises ``ValueError`` for a line that is really corrupt."""
    try:
        return orjson.loads(line)
    except ValueError:
        return json.loads(line)


def _read_file(f: Path) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]], int]:
    """The header, the records with their line numbers, and 1 if a torn last line was cut."""
    data = f.read_bytes()
    lines = data.split(b"\n")
    torn = 0
    last = lines.pop()  # b"" when the file ends with a newline
    if last:
        torn = 1  # no newline at the end: the final write was cut short
    if not lines:
        raise UserError(f"{f}: no header line (not an rlbench interaction log)")
    try:
        header = _loads(lines[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get(FORMAT_KEY) != FORMAT_VERSION:
        raise UserError(
            f"{f}: line 1 is not an rlbench interaction log header ({FORMAT_KEY}: {FORMAT_VERSION})"
        )
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise UserError(f"{f}: the header lacks {', '.join(missing)}")
    out = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            rec = _loads(line)
        except ValueError:
            raise UserError(f"{f}: line {i} is not valid JSON (a corrupt log)") from None
        if not isinstance(rec, dict):
            raise UserError(f"{f}: line {i} is not a JSON object")
        out.append((i, rec))
    return header, out, torn


def _to_arrays(
    rows: list[dict[str, Any]], header: dict[str, Any], files: list[Path], torn: int
) -> InteractionLog:
    required = [c for c in COLUMNS if c != "context"]
    for rec in rows:
        missing = [c for c in required if c not in rec]
        if missing:
            f, line = rec["_where"]
            raise UserError(f"{f}: line {line} lacks column(s) {', '.join(missing)}")
    obs_shape = tuple(int(d) for d in header["obs_shape"])
    n_actions = int(header["n_actions"])
    n = len(rows)

    def column(name: str, dtype: Any) -> np.ndarray:
        try:
            return np.asarray([r[name] for r in rows], dtype=dtype)
        except (TypeError, ValueError):
            for r in rows:
                try:
                    np.asarray(r[name], dtype=dtype)
                except (TypeError, ValueError):
                    f, line = r["_where"]
                    raise UserError(
                        f"{f}: line {line}: {name}={r[name]!r} is not a number"
                    ) from None
            raise UserError(f"{files[0]}: column {name} is ragged") from None

    for name in ("obs", "next_obs"):
        for r in rows:
            if np.shape(r[name]) != obs_shape:
                f, line = r["_where"]
                raise UserError(
                    f"{f}: line {line}: {name} has shape {list(np.shape(r[name]))}, the header "
                    f"says {list(obs_shape)} (a schema from another environment?)"
                )
    ts = column("ts", np.float64)
    step = column("step", np.int64)
    obs = column("obs", np.float64).reshape(n, *obs_shape)
    next_obs = column("next_obs", np.float64).reshape(n, *obs_shape)
    action = column("action", np.float64)
    propensity = column("propensity", np.float64)
    reward = column("reward", np.float64)
    done = column("done", bool)
    terminal = column("terminal", bool)

    def first_bad(mask: np.ndarray, what: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            f, line = rows[i]["_where"]
            more = int(mask.sum()) - 1
            raise UserError(f"{f}: line {line}: {what}" + (f" (and {more} more)" if more else ""))

    first_bad(step < 0, f"step {int(step.min(initial=0))} is negative")
    bad_a = (action != np.round(action)) | (action < 0) | (action >= n_actions)
    if bad_a.any():
        a = action[np.argmax(bad_a)]
        first_bad(bad_a, f"action {a:g} is outside the action space 0..{n_actions - 1}")
    bad_p = ~((propensity > 0) & (propensity <= 1))
    if bad_p.any():
        p = float(propensity[np.argmax(bad_p)])
        first_bad(bad_p, f"propensity {p!r} is not in (0, 1]: the behaviour policy's probability")
    for name, arr in (("reward", reward), ("obs", obs), ("next_obs", next_obs)):
        flat = arr.reshape(n, -1)
        first_bad(~np.isfinite(flat).all(axis=1), f"{name} is not finite")
    episode_ids: list[str] = []
    codes: dict[str, int] = {}
    episode = np.empty(n, dtype=np.int64)
    for i, r in enumerate(rows):
        key = str(r["episode"])
        if key not in codes:
            codes[key] = len(episode_ids)
            episode_ids.append(key)
        episode[i] = codes[key]
    pairs = episode * (int(step.max(initial=0)) + 1) + step
    _, first, counts = np.unique(pairs, return_index=True, return_counts=True)
    if (counts > 1).any():  # two records of one step: logs of two collections with one id
        i = int(first[np.argmax(counts > 1)])
        f, line = rows[i]["_where"]
        raise UserError(
            f"{f}: line {line}: episode {episode_ids[episode[i]]!r} step {int(step[i])} is "
            "logged more than once (two collections wrote the same episode ids into one folder?): "
            "read them as separate logs, or collect again into a new --out folder"
        )
    return InteractionLog(
        env_id=str(header["env_id"]),
        obs_shape=obs_shape,
        n_actions=n_actions,
        ts=ts,
        episode=episode,
        step=step,
        obs=obs,
        action=action.astype(np.int64),
        propensity=propensity,
        reward=reward,
        next_obs=next_obs,
        done=done,
        terminal=terminal,
        policy=[f"{r['policy']}:{r['policy_version']}" for r in rows],
        context=[r.get("context") or {} for r in rows],
        episode_ids=episode_ids,
        files=files,
        torn=torn,
    )
