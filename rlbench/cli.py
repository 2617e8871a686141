"""What every rlbench command does with a mistake: one line, a suggestion, a non-zero exit.

Hydra prints composition errors over many lines (the config search path, a hint about
``HYDRA_FULL_ERROR``). :func:`run_app` lets those exceptions reach it instead and says what is
wrong in one line, with a "did you mean" where a name was misspelt. ``HYDRA_FULL_ERROR=1``
restores full tracebacks.

Also the process-level rules every command shares: the quick exit (:func:`console`), and for
forked helper children how many the cores allow (:func:`usable_cores`) and that they die with
their parent (:func:`start_helper_child`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import math
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from rlbench.errors import UserError, first_line, storage_message

EXIT_FAILED = 1  # an unexpected error (a bug, or a result that did not reproduce)
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3  # training produced NaN or inf: see rlbench.run.divergence.TrainingDiverged
EXIT_INTERRUPTED = 130
# an output folder that cannot be written: read-only, full, or a file in the way
_WRITE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EEXIST}
_user_wants_traceback: bool | None = None  # while run_app runs: what the user asked for
_app_config: tuple[str, str] | None = None  # while run_app runs a Hydra app: (conf dir, name)
#: a cluster= preset's keys for its launcher, composed onto another launcher's config
_LAUNCHER_CLASH = re.compile(
    r"In 'cluster/([\w-]+)': ConfigKeyError raised while composing config:\s*"
    r"Key '([^']+)' not in '(\w+)'"
)
_NO_GROUP = re.compile(r"Could not override '([^']+)'\. No match in the defaults list")
_ADDED_TWICE = re.compile(
    r"Multiple values for (\S+)\. To override a value use 'override \S+: (\S+)'"
)


@dataclasses.dataclass(frozen=True)
class StoreOptions:
    """How the running command names its MLflow store (``key``) and, if it can run without
    one, the option that says so (``off``). Every hint about the store is written with these,
    so that following a hint never meets an option the command lacks (rlbench-report has no
    ``tracking.enabled``, rlbench-verify no ``tracking.uri=``)."""

    key: str  # "tracking.uri" (a Hydra key), "--tracking-uri" (a flag), "MLFLOW_TRACKING_URI"
    off: str | None = None  # the whole option: "tracking.enabled=false", "--no-track"

    def set_to(self, value: str) -> str:
        """The option naming the store ``value``: ``--tracking-uri V`` or ``tracking.uri=V``."""
        return f"{self.key} {value}" if self.key.startswith("-") else f"{self.key}={value}"

    def named(self) -> str:
        """How a user points this command at a store: its own option, and the variable every
        command also reads (``--tracking-uri / MLFLOW_TRACKING_URI``)."""
        key = "MLFLOW_TRACKING_URI"
        return key if self.key == key else f"{self.key} / {key}"

    def alternatives(self) -> str:
        """``, or <another store>[, or <no store>]``: what else to do, to end a hint with."""
        text = f", or {self.set_to('sqlite:///outputs/mlflow.db')}"
        return text + (f", or {self.off}" if self.off else "")


#: a Hydra app that reads ``tracking.uri`` and needs a store (rlbench-report, rlbench-live)
HYDRA_STORE = StoreOptions("tracking.uri")
#: outside any command (a notebook, a script): the environment names the store
LIBRARY_STORE = StoreOptions("MLFLOW_TRACKING_URI")
_store_options: StoreOptions | None = None  # the running command's (see store_options)
_parsing = False  # an ArgumentParser's parse is under way (a subcommand's parser runs inside)
_flags_seen: set[str] = set()  # the flags of the parsers of that parse


def set_store_options(options: StoreOptions | None) -> None:
    """Declare the running command's store options (None: back to the default)."""
    global _store_options
    _store_options = options


def store_options() -> StoreOptions:
    """The running command's store options: those it declared (a Hydra app) or its argparse
    parser has (``--tracking-uri``, ``--no-track``/``--no-tracking``); inside another Hydra
    job ``tracking.uri``; else ``MLFLOW_TRACKING_URI``."""
    if _store_options is not None:
        return _store_options
    hydra_config = sys.modules.get("hydra.core.hydra_config")  # not imported: no Hydra job
    if hydra_config is not None and hydra_config.HydraConfig.initialized():
        return HYDRA_STORE
    return LIBRARY_STORE


def _options_of(flags: set[str]) -> StoreOptions:
    """The store options a command with argparse ``flags`` has."""
    key = "--tracking-uri" if "--tracking-uri" in flags else LIBRARY_STORE.key
    off = next((flag for flag in ("--no-track", "--no-tracking") if flag in flags), None)
    return StoreOptions(key, off)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes are a ``UserError`` (one line, exit 2), not usage text.

    A parse also declares the command's store options (:func:`store_options`) from the flags
    of the parsers it ran: the command's and its subcommand's (rlbench-forecast train has
    ``--no-tracking``, rlbench-forecast evaluate does not).
    """

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        global _parsing
        outer = not _parsing
        if outer:
            _flags_seen.clear()
            _parsing = True
        _flags_seen.update(self._option_string_actions)
        try:
            return super().parse_known_args(args, namespace)
        finally:
            if outer:
                _parsing = False
                set_store_options(_options_of(_flags_seen))


def wants_traceback() -> bool:
    """True when the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    if _user_wants_traceback is not None:
        return _user_wants_traceback
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(err: BaseException) -> str:
    """One line naming what is wrong in ``err`` and, where possible, how to fix it."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, UserError):
        return str(err)
    if (storage := storage_message(err)) is not None:
        return storage
    missing_env = re.search(r"Environment variable '([^']+)' not found", str(err))
    if missing_env:
        from rlbench.config import env_hint

        name = missing_env.group(1)
        return f"the config reads the environment variable {name}, which is not set{env_hint(name)}"
    clash = _LAUNCHER_CLASH.search(str(err))
    if clash:
        return launcher_clash(*clash.groups())
    no_group = _NO_GROUP.search(str(err))
    if no_group:
        return no_such_group(no_group.group(1))
    added_twice = _ADDED_TWICE.search(str(err))
    if added_twice:  # +debug=fast where the defaults list already has debug
        group, option = added_twice.groups()
        app = Path(sys.argv[0]).name or "this command"
        return f"{app} already has the config group {group!r}: write {group}={option} (no +)"
    if isinstance(err, MissingConfigException) and err.options is not None:
        group, _, option = str(err.missing_cfg_file or "").rpartition("/")
        known = ", ".join(err.options)
        return (
            f"unknown {group or 'config'} option {option!r}{did_you_mean(option, err.options)}; "
            f"choose one of: {known}"
        )
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        key = str(cause.full_key)
        parent = getattr(cause, "parent_node", None)
        known = [str(k) for k in parent if k != "hydra"] if parent is not None else []
        prefix = key.rpartition(".")[0]
        if "not in struct" in str(cause) or "Could not override" in str(err):
            dotted = [f"{prefix}.{k}" if prefix else k for k in known]
            hint = did_you_mean(key, dotted)
            listing = f"; keys there: {', '.join(known)}" if known and not hint else ""
            return (
                f"unknown config key {key!r}{hint}{listing} "
                f"(to add a key the config does not have, write +{key}=...)"
            )
        return f"bad value for {key!r}: {first_line(cause)}"
    if _is_flag_conflict(err):
        return f"{first_line(err)} (--cfg/--info print the config of one run: drop -m)"
    if (completion := _completion_misuse(err)) is not None:
        return completion
    if isinstance(err, OverrideParseException):
        return f"malformed override: {first_line(err)} (see https://hydra.cc/docs/advanced/override_grammar/basic/)"
    if isinstance(err, OSError) and err.filename is not None:
        text = f"cannot use {err.filename}: {err.strerror or first_line(err)}"
        if err.errno in _WRITE_ERRORS and Path(sys.argv[0]).name == "rlbench-train":
            text += (
                " (is the folder writable? run from another directory, or set hydra.run.dir / "
                "hydra.sweep.dir / train.checkpoint_dir)"
            )
        elif err.errno in _WRITE_ERRORS:  # the folder flag is the command's own (--out, ...)
            text += " (is the folder writable? choose another output folder)"
        return text
    return f"{type(err).__name__}: {first_line(err)}"


def launcher_clash(preset: str, key: str, launcher_conf: str) -> str:
    """The line for ``cluster=<preset>`` beside a ``hydra/launcher=`` of another kind: the
    preset sets its launcher's keys (``hydra.launcher.n_jobs``), which the other lacks."""
    from rlbench.config import CONF_DIR

    conf_dir = Path(_app_config[0] if _app_config else CONF_DIR)
    launchers = _preset_launchers(conf_dir / "cluster")
    chosen = next(
        (a.partition("=")[2] for a in sys.argv[1:] if a.lstrip("+~").startswith("hydra/launcher=")),
        launcher_conf,
    )
    own = f"the {launchers[preset]} launcher" if preset in launchers else "a launcher of its own"
    fits = [name for name, launcher in launchers.items() if launcher == chosen]
    if fits:
        fix = f"or for {chosen} use {' or '.join(f'cluster={n}' for n in fits)}"
    else:
        known = ", ".join(f"{n} ({launcher})" for n, launcher in launchers.items())
        fix = f"but no cluster= preset uses {chosen} (presets and their launchers: {known})"
    return (
        f"cluster={preset} runs its jobs through {own} and sets hydra.launcher.{key}, "
        f"which hydra/launcher={chosen} does not have: drop hydra/launcher={chosen} (the preset "
        f"sets the launcher itself), {fix}"
    )


def _preset_launchers(folder: Path) -> dict[str, str]:
    """``{preset: launcher}`` of the cluster= presets in ``folder`` (their defaults list's
    ``override /hydra/launcher: X``)."""
    found = {}
    for file in sorted(folder.glob("*.yaml")):
        match = re.search(r"override /?hydra/launcher:\s*([\w-]+)", file.read_text())
        if match:
            found[file.stem] = match.group(1)
    return found


def no_such_group(group: str) -> str:
    """The line for a config group the running Hydra app does not have (Hydra's "Could not
    override 'algo'. No match in the defaults list", or a group added with ``+``): the app's
    own groups and settings, read from its primary config (conf/ holds rlbench-train's groups
    beside rlbench-report's config, so a group can exist on disk and still not be the app's)."""
    app = Path(sys.argv[0]).name or "this command"
    if _app_config is None:
        return f"{app} has no config group {group!r} (see {app} --help)"
    groups, keys = config_surface(*_app_config)
    where = f"its groups: {', '.join(groups)}" if groups else "it has no config groups"
    return (
        f"{app} has no config group {group!r}{did_you_mean(group, groups)} ({where}; its "
        f"settings: {', '.join(keys)}; see {app} --help)"
    )


def config_surface(conf_dir: str, config_name: str) -> tuple[list[str], list[str]]:
    """The groups (its defaults list, Hydra's own left out) and settings (``key=`` for a value,
    ``key.*`` for a block) of a Hydra app's primary config file."""
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.load(Path(conf_dir) / f"{config_name}.yaml")
    groups: list[str] = []
    for entry in raw.get("defaults") or []:
        name = next(iter(entry)) if isinstance(entry, DictConfig) else str(entry)
        name = str(name).removeprefix("override ").lstrip("+/")
        if name != "_self_" and not name.startswith("hydra/") and name not in groups:
            groups.append(name)
    keys = [
        f"{key}.*" if isinstance(raw._get_node(key), DictConfig) else f"{key}="
        for key in raw
        if key not in ("defaults", "hydra")
    ]
    return groups, keys


def version_line() -> str:
    """``rlbench-train 0.1.0 (Hydra 1.3.8)``: what ``--version`` prints for a Hydra app."""
    from importlib.metadata import PackageNotFoundError, version

    from hydra import __version__ as hydra_version

    try:
        ours = version("rlbench")  # (the package's own module is a layer above this one)
    except PackageNotFoundError:  # a checkout that was never installed
        ours = "(not installed)"
    return f"{Path(sys.argv[0]).name or 'rlbench'} {ours} (Hydra {hydra_version})"


def _is_hydra_app(app: Callable[[], Any]) -> bool:
    """True for a ``@hydra.main`` function (its code is Hydra's wrapper), not a plain main."""
    code = getattr(app, "__code__", None)
    return code is not None and Path(code.co_filename).parts[-2:] == ("hydra", "main.py")


def _prints_config(args: list[str]) -> bool:
    """True for Hydra's ``--cfg``/``-c`` (print the composed config) and ``--info``."""
    return any(a in ("--cfg", "-c", "--info") or a.startswith(("--cfg=", "--info=")) for a in args)


def run_app(
    app: Callable[[], Any],
    wrap_stdout: Callable[[Any], Any] | None = None,
    config: tuple[str, str] | None = None,
) -> None:
    """Run a ``@hydra.main`` function; print mistakes as one line and exit non-zero.

    ``wrap_stdout`` wraps ``sys.stdout`` while Hydra prints the config (``--cfg``, ``--info``):
    the apps pass a stream that masks passwords, which ``--cfg job --resolve`` would show.
    ``config`` (its conf dir and primary config's name) lets a group the app does not have be
    answered with the groups and settings it does have (:func:`no_such_group`).

    Exit codes: 2 bad input (config, files, services), 3 training diverged, 1 anything else,
    130 Ctrl-C. ``HYDRA_FULL_ERROR`` is restored afterwards, so in-process callers (tests, a
    notebook) see the environment they had.
    """
    global _user_wants_traceback, _app_config
    if _is_hydra_app(app) and "--version" in sys.argv[1:]:  # Hydra's own says "Hydra 1.3.8"
        print(version_line())
        return
    set_store_options(None)  # the app declares its own (or its parser does)
    _app_config = config
    saved = os.environ.get("HYDRA_FULL_ERROR")
    _user_wants_traceback = saved == "1"
    if _user_wants_traceback:
        try:
            app()
        finally:  # as below: an in-process caller's next command starts clean
            _user_wants_traceback = None
            set_store_options(None)
            _app_config = None
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us rather than Hydra's printer
    stdout, stderr, parser_error = sys.stdout, sys.stderr, argparse.ArgumentParser.error
    if wrap_stdout is not None and _prints_config(sys.argv[1:]):
        sys.stdout = wrap_stdout(stdout)
    sys.stderr = jobs = _FailedJobLine(stderr)
    argparse.ArgumentParser.error = ArgumentParser.error  # Hydra's own flags: one line too
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # output piped into `head`: nothing more to say
        stderr.close()
        sys.exit(0)
    except Exception as err:  # (sys.stderr: whatever masking stream is in place still masks)
        code = exit_code(err)
        print(f"error: {describe(err)}{jobs.which()}", file=sys.stderr)
        if code == EXIT_FAILED:
            print("(set HYDRA_FULL_ERROR=1 for the full traceback)", file=sys.stderr)
        sys.exit(code)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        argparse.ArgumentParser.error = parser_error
        _user_wants_traceback = None
        set_store_options(None)  # an in-process caller's next command declares its own
        _app_config = None
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


class _FailedJobLine:
    """``sys.stderr`` during a Hydra app, without the line Hydra's sweepers write before
    re-raising a failed job's error ("Error executing job with overrides: [...]"): the job's
    overrides are added to the one ``error:`` line instead."""

    PREFIX = "Error executing job with overrides: "

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.job: str | None = None

    def write(self, text: str) -> int:
        if text.startswith(self.PREFIX):
            self.job = text.removeprefix(self.PREFIX).strip()
            return len(text)
        return self._stream.write(text)

    def which(self) -> str:
        """Which job of a multirun failed (a single run's overrides are the command's own)."""
        return f" (in the job with overrides {self.job})" if self.job not in (None, "[]") else ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _completion_misuse(err: BaseException) -> str | None:
    """The line for Hydra's shell-completion flag (``-sc``) used without what it should do, or
    for a shell Hydra has no completion for (Hydra raises a ValueError: a bug's exit code)."""
    if not isinstance(err, ValueError):
        return None
    text = str(err)
    app = Path(sys.argv[0]).name or "this command"
    usage = f'eval "$({app} -sc install=bash)" (uninstall=bash removes it)'
    if text.startswith("Expecting one subcommand from ['install', 'uninstall', 'query']"):
        return f"-sc needs one of install=SHELL, uninstall=SHELL, query=SHELL: {usage}"
    unknown = re.match(r"No completion plugin for '([^']*)' found, available :(.*)", text, re.S)
    if unknown:
        shells = ", ".join(unknown.group(2).split())
        return f"no shell completion for {unknown.group(1)!r}: choose one of {shells}: {usage}"
    return None


def _is_flag_conflict(err: BaseException) -> bool:
    """Hydra's ValueError for two of --run, --multirun, --cfg, --info at once."""
    return isinstance(err, ValueError) and str(err).startswith("Only one of --run")


def exit_code(err: BaseException) -> int:
    """The exit code for a command that ended with ``err`` (see :func:`run_app`)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if getattr(err, "exit_code", None) is not None:  # e.g. rlbench.run.divergence.TrainingDiverged
        return int(err.exit_code)
    if isinstance(err, UserError | HydraException | OmegaConfBaseException):
        return EXIT_USER_ERROR
    if _is_flag_conflict(err) or _completion_misuse(err) is not None:
        return EXIT_USER_ERROR
    if storage_message(err) is not None:  # a full disk, a size limit: the machine's, not a bug
        return EXIT_USER_ERROR
    if isinstance(err, OSError) and err.filename is not None:  # an unwritable path
        return EXIT_USER_ERROR
    return EXIT_FAILED


def console(main: Callable[[], int | None]) -> NoReturn:
    """Run a console script's ``main`` and end the process without tearing its modules down.

    An interpreter that loaded torch spends about 0.45 s after the last line of a command
    destroying modules and C++ state nobody reads again (``python -c "import torch,
    stable_baselines3, hydra"`` exits 0.5 s after its last line, 0.02 s via ``os._exit``). What
    an exit must do still happens here, in Python's order: other threads are waited for (when a
    non-daemon one still runs, such as a joblib grid's executor, the interpreter's own exit
    does it all), then the atexit handlers (the tracking helper's shutdown, logging's flush,
    coverage), then the standard streams are flushed. ``main`` may return an exit code or raise
    ``SystemExit``; other exceptions take the normal path with their traceback.
    """
    try:
        code: object = main()
    except SystemExit as done:
        code = done.code
    except KeyboardInterrupt:  # a command without its own handler: the same line and code
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    if any(t.is_alive() and not t.daemon for t in _other_threads()):
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (| head): nothing to say
            stream.flush()
    os._exit(status)


def _other_threads() -> list[Any]:
    import threading

    return [t for t in threading.enumerate() if t is not threading.current_thread()]


def nearest_existing(path: Path) -> Path:
    """The nearest path at or above ``path`` that exists: where making ``path`` would start.
    Checked before long work, so that an output folder that cannot be made is said first."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def usable_cores() -> int:
    """How many cores this process may keep busy: its CPU affinity, capped by a cgroup's CPU
    quota (a container granted 2 CPUs of a 64-core host has 2: helper children beyond that
    only take turns)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs granted by cgroup v2's ``cpu.max`` or v1's CFS quota; None when unlimited/unknown."""

    def read(name: str) -> list[str]:
        with open(os.path.join(root, name)) as f:
            return f.read().split()

    for files in (("cpu.max",), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = [field for name in files for field in read(name)]
        except OSError:
            continue
        with contextlib.suppress(ValueError, ZeroDivisionError):
            quota, period = (int(field) for field in fields)  # "max" / -1: unlimited
            return quota / period if quota > 0 else None
        return None
    return None


def start_helper_child(parent_pid: int) -> None:
    """First thing in a forked helper (a report's drawing worker, a run's validation): Ctrl-C
    reaches the whole process group and the parent alone answers it; a parent killed outright
    takes the child with it (Linux), so none goes on writing into folders the parent owned."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # it died before the line above took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
