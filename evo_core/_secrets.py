"""Credentials never leave the process: every URL a run writes anywhere has its password shown as ***.

    mask_secrets("tracking.storage=postgresql+psycopg://evo:s3cret@db:5432/optuna")
        -> "tracking.storage=postgresql+psycopg://evo:***@db:5432/optuna"

    storage = storage_url_with_env_password(cfg.tracking.storage)    # EVO_STORAGE_PASSWORD filled in
    uri = tracking_uri_without_credentials(cfg.tracking.uri)        # user:pw -> MLFLOW_TRACKING_* (in-process)
    with masked_output():                                           # stdout, stderr, every log handler
        mask_files(run_dir / ".hydra" / name for name in HYDRA_FILES)

`mask_secrets` is the one rule, applied to any text (a lone URL, YAML, JSON, Hydra overrides, an
error message): in each `scheme://` URL the password of `user:password@` becomes ***, and so does
a bare token in the user part of an http(s) URL (`https://TOKEN@host`; a database URL's bare user
name is kept: it is no secret, and PGPASSWORD supplies its password); `password=...` (a libpq
key=value string, a URL's query) and a URL's token-like query values become *** too. A password
with an unencoded @ : / ? # is still hidden whole (the last @ before the host ends it); where a URL
is ambiguous it errs on the side of hiding (`http://u:pw@h/x?e=a@b` shows as `http://u:***@b`).

Where a run writes and how each is covered: the console and Hydra's job log (masked_output, in the
CLI), the MLflow run's params and tags (Tracker masks every value), Hydra's saved configs (Hydra
writes run_dir/.hydra/*.yaml before the task starts: the CLI rewrites them masked, still valid
YAML), trial fail reasons (the study loop), error lines (the CLI's error boundary). MLflow itself
gets a tracking URI's credentials the way it documents, from MLFLOW_TRACKING_USERNAME/PASSWORD,
and a URI without them, so it neither stores nor echoes them. docs/scale-out.md says which secret
wins when several are given.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")  # what Hydra saves in <run_dir>/<output_subdir>
STORAGE_PASSWORD_ENV = "EVO_STORAGE_PASSWORD"

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# a URL runs to whitespace, a quote or angle bracket that ends a string, or the next URL's scheme
# (Hydra joins overrides with commas: "a=postgresql://...,b=http://...")
_URL = re.compile(rf"(?P<scheme>{_SCHEME})(?P<rest>(?:(?!{_SCHEME})[^\s'\"<>`])*)")
# anywhere (a libpq "host=h password=x" string, a URL's query): the value up to a separator
_PASSWORD_PARAM = re.compile(r"(?i)(?<![A-Za-z0-9])(password|passwd|pwd|sslpassword)=(?!\*\*\*)[^\s&;'\"#]+")
# in a URL's query only: token-like values (a signed URL, an API key)
_TOKEN_PARAM = re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey|secret|sig|signature|x-amz-signature)=)"
                          r"(?!\*\*\*)[^&#]+")
# a bare user part is a token on these (GitHub's https://TOKEN@github.com/...), a user name on the rest
_TOKEN_USER_SCHEMES = {"http", "https", "ws", "wss"}


def mask_secrets(text: str) -> str:
    """`text` with every credential in it shown as *** (module docstring); idempotent."""
    if "://" in text:
        text = _URL.sub(_mask_url, text)
    if "=" in text:
        text = _PASSWORD_PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return text


def _mask_url(match: re.Match) -> str:
    scheme, rest = match.group("scheme"), match.group("rest")
    cut = _authority_end(rest)
    at = rest.rfind("@", 0, cut)  # the userinfo ends at the authority's last @
    if ":" in rest[:max(at, 0) or cut] and "@" in rest[cut:]:
        # a password with an unencoded / ? # and an @ after it (user:p@ss/word@host): hidden up to
        # the URL's last @, even if that @ was the path's
        at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[at:]}"
        elif scheme[:-3].lower().rsplit("+", 1)[-1] in _TOKEN_USER_SCHEMES and user:
            rest = MASK + rest[at:]
    if "=" in rest:
        rest = _TOKEN_PARAM.sub(lambda m: m.group(1) + MASK, rest)
    return scheme + rest


def _authority_end(rest: str) -> int:
    """Where a URL's authority ([userinfo@]host[:port]) ends in what follows its `scheme://`."""
    return min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))


def storage_url_with_env_password(url: str) -> str:
    """A storage URL that names a user and no password gets $EVO_STORAGE_PASSWORD as its password
    (percent-encoded); a password in the URL wins over it, and it wins over the driver's own
    PGPASSWORD (libpq reads that only when the URL has none). Any other URL is returned as given."""
    password = os.environ.get(STORAGE_PASSWORD_ENV)
    if not password or "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    at = rest.rfind("@", 0, _authority_end(rest))
    if at <= 0 or ":" in rest[:at]:  # no user, or a password already there
        return url
    return f"{scheme}://{rest[:at]}:{quote(password, safe='')}{rest[at:]}"


def tracking_uri_without_credentials(uri: str) -> str:
    """An MLflow tracking URI as MLflow should get it: `http://user:pw@host:5000` loses its user
    part, which goes to MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in this process (what
    MLflow reads for HTTP basic auth), so MLflow never stores nor prints it. Credentials in the URI
    win over those variables; a URI without any leaves them as the environment has them."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if user:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
    if colon:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return parts._replace(netloc=host).geturl()


def mask_files(paths: Iterable[str | Path]) -> None:
    """Rewrite each existing file with its credentials masked (Hydra's saved configs: it writes
    them before our code runs)."""
    from ._files import atomic_write_text

    for path in map(Path, paths):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            if (masked := mask_secrets(text)) != text:
                atomic_write_text(path, masked)


class _MaskedStream:
    """A text stream whose writes are masked; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask_secrets(text))
        return len(text)  # what the caller wrote, as a stream reports it

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _MaskedFormatter(logging.Formatter):
    """A handler's own formatter, its output masked (messages, arguments and tracebacks alike)."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(self.inner.format(record))


@contextlib.contextmanager
def masked_output() -> Iterator[None]:
    """For the block: stdout and stderr masked (prints, warnings, tracebacks), and so is every
    logging handler there is (the root's: Hydra's console and job log file; a library's own),
    whatever logs through them."""
    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values()
                                      if isinstance(x, logging.Logger))]
    handlers = list({id(h): h for x in loggers for h in x.handlers
                     if not isinstance(h.formatter, _MaskedFormatter)}.values())
    formatters = [h.formatter for h in handlers]
    stdout, stderr = sys.stdout, sys.stderr
    for handler in handlers:
        handler.setFormatter(_MaskedFormatter(handler.formatter))
    sys.stdout, sys.stderr = _MaskedStream(stdout), _MaskedStream(stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        for handler, formatter in zip(handlers, formatters):
            handler.setFormatter(formatter)
