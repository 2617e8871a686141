"""Secrets out of everything we record or print: passwords and tokens in URLs.

A tracking server, an Optuna storage or a database URL may carry a secret in any form:
``postgresql://user:secret@host/db`` (a password with ``/``, ``@``, ``:`` raw or %-encoded),
``http://user:secret@host:5000``, ``...?password=secret`` or another known key of a query string
(``pwd``, ``token``, ``access_token``, ``api_key``, ``X-Amz-Signature``, ``sig``...). Runs record
their config, the Hydra overrides, error messages and log lines where a whole team reads them;
every such text goes through :func:`mask_passwords` first, and :class:`SecretsCallback` keeps
them out of what Hydra prints and writes (``.hydra/*.yaml``, ``multirun.yaml``, launcher lines).
The job itself, and its child processes, still get the real secret, through the environment.

Two ways of finding a secret, both applied to every text:

- the shape of a URL: the password of its user information and the values of known query keys
  (:func:`url_secrets` is the parser, :func:`mask_passwords` the masker);
- the secrets this process knows: those :func:`remember` was given (every secret found in the
  config or on the command line), and those in the environment (``RLBENCH_SECRET_*``,
  ``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, ``RLBENCH_STORAGE_PASSWORD``, a
  password in ``MLFLOW_TRACKING_URI``), masked wherever they appear, also outside a URL.

Imports nothing heavy: Hydra and OmegaConf only inside the callback.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote

MASK = "***"
#: query-string keys whose value is a secret (compared lower-case, ``-`` as ``_``)
SECRET_QUERY_KEYS = frozenset(
    {
        "password", "passwd", "pwd", "pass", "secret", "client_secret", "token", "access_token",
        "refresh_token", "id_token", "auth_token", "api_key", "apikey", "key", "access_key",
        "secret_key", "private_key", "auth", "authorization", "credential", "credentials",
        "x_amz_signature", "x_amz_credential", "x_amz_security_token", "signature", "sig",
        "x_goog_signature", "x_goog_credential", "sas", "sv_sig",
    }
)  # fmt: skip
#: environment variables whose value is a secret, masked wherever it appears
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "RLBENCH_STORAGE_PASSWORD")
SECRET_ENV_PREFIX = "RLBENCH_SECRET_"  # a secret moved out of the config (SecretsCallback)
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
MIN_LITERAL = 4  # shorter known secrets are masked only where a URL's shape shows them

_SCHEME = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://")
_END = re.compile(r"""[\s'"`<>]""")  # where a URL in a text ends
_PROSE_END = re.compile(r"[:,;.!?)\]]+$")  # a sentence's punctuation after a URL
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-%~]*)(?::\d*)?$")
_REMEMBERED: set[str] = set()


# --------------------------------------------------------------------------- URLs


def _userinfo_end(token: str, start: int) -> int | None:
    """In ``token`` (a URL starting at its ``scheme://``, ``start`` just after it): the index of
    the ``@`` that ends a ``user:password`` part, or None when the URL has none.

    A password may hold a raw ``/``, ``@`` or ``:``: the userinfo ends at the first ``@`` after
    which a host (and port) follows up to ``/``, ``?``, ``#`` or the end. ``host:5000/path@x``
    is a port and a path, not a password."""
    colon = token.find(":", start)
    if colon < 0:
        return None
    user = token[start:colon]
    if any(c in user for c in "/@?#"):
        return None
    at = token.find("@", colon + 1)
    while at >= 0:
        authority = re.split(r"[/?#,]", token[at + 1 :], maxsplit=1)[0]
        if _HOST.match(authority):
            password = token[colon + 1 : at]
            head = password.split("/", 1)[0]
            if "/" in password and head.isdigit():
                return None  # host:port/path@x
            return at
        at = token.find("@", at + 1)
    return None


def _spans(token: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each secret in one URL ``token``: its password and the values of
    known query keys."""
    m = _SCHEME.match(token)
    if m is None:
        return
    at = _userinfo_end(token, m.end())
    if at is not None:
        colon = token.find(":", m.end())
        if at > colon + 1:
            yield colon + 1, at
    rest = at + 1 if at is not None else m.end()
    query = token.find("?", rest)
    if query < 0:
        return
    end = token.find("#", query)
    end = len(token) if end < 0 else end
    pos = query + 1
    for part in re.split(r"([&;])", token[query + 1 : end]):
        key, eq, value = part.partition("=")
        name = unquote(key).strip().lower().replace("-", "_")
        if eq and value and name in SECRET_QUERY_KEYS:
            yield pos + len(key) + 1, pos + len(part)
        pos += len(part)


def _url_tokens(text: str) -> Iterator[tuple[int, str]]:
    """``(start, url)`` of each URL in ``text``. A URL that more text follows gives up its
    trailing punctuation to the sentence (``in URL?password=x: 3 trials``): a secret query
    value must not swallow the colon after it. A URL that ends the text keeps it (a config
    value is one URL, and its secret may end in any character)."""
    for m in _SCHEME.finditer(text):
        end = _END.search(text, m.start())
        token = text[m.start() : end.start() if end else len(text)]
        if end is not None:
            token = _PROSE_END.sub("", token)
        yield m.start(), token


def url_secrets(text: str) -> list[str]:
    """The secrets (as written, %-encoding kept) of every URL in ``text``; not the ones that
    are already masked or name an interpolation (``${oc.env:RLBENCH_SECRET_1}``)."""
    found = []
    for _, token in _url_tokens(text):
        found += [token[a:b] for a, b in _spans(token)]
    return [s for s in found if s != MASK and not _is_reference(s)]


def _is_reference(text: str) -> bool:
    return text.startswith("${") and text.endswith("}") and text.count("${") == 1


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without user:password@, user, password)``, both %-decoded; the URL unchanged and
    ``None, None`` when it carries no password."""
    m = _SCHEME.match(url)
    if m is None:
        return url, None, None
    at = _userinfo_end(url, m.end())
    if at is None:
        return url, None, None
    user, _, password = url[m.end() : at].partition(":")
    return url[: m.end()] + url[at + 1 :], unquote(user), unquote(password)


# --------------------------------------------------------------------------- known secrets


def remember(secret: str) -> None:
    """Mask ``secret`` (and its %-encoded and decoded forms) wherever it appears from now on."""
    if secret:
        _REMEMBERED.add(secret)


def known_secrets() -> set[str]:
    """The secrets this process masks literally: remembered ones and those in the environment."""
    found = set(_REMEMBERED)
    for key, value in os.environ.items():
        if not value:
            continue
        if key.startswith(SECRET_ENV_PREFIX) or key in SECRET_ENV:
            found.add(value)
        elif key in URI_ENV:
            found.update(url_secrets(value))
    forms = set()
    for secret in found:
        forms |= {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")}
    return {s for s in forms if len(s) >= MIN_LITERAL}


def mask_passwords(text: str) -> str:
    """``text`` with every secret replaced by ``***``: URL passwords and secret query values
    (by their shape), and every known secret (see :func:`known_secrets`) anywhere."""
    pieces, last = [], 0
    for start, token in _url_tokens(text):
        if start < last:
            continue
        for a, b in _spans(token):
            if _is_reference(token[a:b]):
                continue  # ${oc.env:RLBENCH_SECRET_1} names the secret, it is not one
            pieces += [text[last : start + a], MASK]
            last = start + b
    text = "".join(pieces) + text[last:]
    for secret in sorted(known_secrets(), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_values(values: Mapping[str, object]) -> dict[str, str]:
    """String values of ``values`` with passwords masked (keys unchanged)."""
    return {str(k): mask_passwords(str(v)) for k, v in values.items()}


def display_uri(uri: object) -> str:
    """A store URI as messages show it: secrets masked."""
    return mask_passwords(str(uri))


class MaskingFilter(logging.Filter):
    """Masks secrets in every record a handler emits (its message and arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler's own error
            return True
        masked = mask_passwords(message)
        if masked != message or record.args:
            record.msg, record.args = masked, ()
        return True


def mask_logging() -> None:
    """Add :class:`MaskingFilter` to every handler of every logger (once each)."""
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if not any(isinstance(f, MaskingFilter) for f in handler.filters):
                handler.addFilter(MaskingFilter())


class MaskingStream:
    """A text stream that masks secrets in what is written to it (``sys.stderr`` of a Hydra
    app: error lines, warnings, tracebacks); everything else is the wrapped stream's."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask_passwords(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def mask_stderr() -> None:
    """Wrap ``sys.stderr`` in a :class:`MaskingStream` (once)."""
    import sys

    if not isinstance(sys.stderr, MaskingStream) and sys.stderr is not None:
        sys.stderr = MaskingStream(sys.stderr)


# --------------------------------------------------------------------------- Hydra


def env_name(secret: str) -> str:
    """The environment variable that carries ``secret`` to the job and its child processes
    (``RLBENCH_SECRET_<n>``: an existing one with this value, else the next free number)."""
    n = 1
    for key, value in os.environ.items():
        if key.startswith(SECRET_ENV_PREFIX):
            if value == secret:
                return key
            suffix = key.removeprefix(SECRET_ENV_PREFIX)
            if suffix.isdigit():
                n = max(n, int(suffix) + 1)
    name = f"{SECRET_ENV_PREFIX}{n}"
    os.environ[name] = secret
    return name


def protect(text: str) -> str:
    """``text`` with each URL secret replaced by ``${oc.env:RLBENCH_SECRET_<n>}`` (the secret
    moved into that environment variable): what Hydra prints and saves names the variable, and
    the job's config resolves back to the very same text."""
    secrets = url_secrets(text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        remember(secret)
        text = text.replace(secret, "${oc.env:" + env_name(secret) + "}")
    return text


def _protect_override(line: str) -> str:
    key, eq, value = line.partition("=")
    if not eq or not url_secrets(value):
        return line
    return f"{key}={protect(value)}"


def protect_config(cfg: Any) -> None:
    """Move every URL secret of a composed Hydra config out of it, in place: each string value
    (unresolved) and each ``hydra.overrides.task`` line names ``${oc.env:RLBENCH_SECRET_<n>}``
    instead; ``hydra.job.override_dirname`` (a name, never resolved back) shows ``***``."""
    from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

    def walk(node: Any) -> None:
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            child = node._get_node(key)
            if isinstance(child, DictConfig | ListConfig):
                if not child._is_none() and not child._is_missing():
                    walk(child)
                continue
            raw = child._value() if child is not None else None
            if isinstance(raw, str) and url_secrets(raw):
                node[key] = protect(raw)

    with read_write(cfg), open_dict(cfg):
        hydra = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
        if hydra is not None:
            overrides = OmegaConf.select(cfg, "hydra.overrides")
            if overrides is not None:
                for group in ("task", "hydra"):
                    lines = overrides.get(group)
                    if lines is not None:
                        overrides[group] = [_protect_override(str(x)) for x in lines]
            dirname = OmegaConf.select(cfg, "hydra.job.override_dirname")
            if isinstance(dirname, str):
                remember_all(url_secrets(dirname))
                cfg.hydra.job.override_dirname = mask_passwords(dirname)
        walk(cfg)


def remember_all(secrets: list[str]) -> None:
    for secret in secrets:
        remember(secret)


def scrub_files(folder: Any) -> None:
    """Mask secrets in the YAML files Hydra saved in ``folder`` (``.hydra``), if any remain."""
    from pathlib import Path

    path = Path(str(folder))
    if not path.is_dir():
        return
    for file in path.glob("*.yaml"):
        try:
            text = file.read_text()
        except OSError:
            continue
        masked = mask_passwords(text)
        if masked != text:
            tmp = file.with_name(f".{file.name}.masking")
            tmp.write_text(masked)
            os.replace(tmp, file)
