"""Bearer tokens of the service: ``name:token`` pairs from a file or the environment.

Only a token's *name* ever leaves this module (into job rows, logs and answers); the
token itself is kept in memory and compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import re
import stat
from pathlib import Path
from typing import Mapping

from featstore.errors import ConfigError

#: Environment variable with ``name:token,name2:token2`` for `featstore serve`.
ENV_TOKENS = "FEATSTORE_SERVICE_TOKENS"
#: Shortest token accepted: guessing must not be an option.
MIN_TOKEN_LENGTH = 16
NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
HOW_TO_MAKE = ("Make one with: python -c \"import secrets; print('alice:' + "
               "secrets.token_urlsafe(32))\" >> tokens.txt")


class TokenSet:
    """Named tokens; :meth:`identify` maps an ``Authorization`` header to a name."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self._pairs = [(name, token.encode()) for name, token in pairs]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._pairs]

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:  # never the tokens themselves
        return f"TokenSet(names={self.names})"

    def identify(self, authorization: str | None) -> str | None:
        """The name of the token in ``Bearer TOKEN``, or None if it is missing or unknown.

        Every known token is compared (with :func:`hmac.compare_digest`) so the time
        taken does not depend on which one matched.
        """
        if not authorization:
            return None
        scheme, _, given = authorization.strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return None
        raw = given.encode()
        found = None
        for name, token in self._pairs:
            if hmac.compare_digest(raw, token):
                found = name
        return found


def parse_tokens(text: str, source: str, *, separator: str = "\n") -> list[tuple[str, str]]:
    """``name:token`` entries; blank entries and ``#`` comments are skipped.

    Error messages name the entry's position, never its token.
    """
    pairs: list[tuple[str, str]] = []
    for number, entry in enumerate(text.split(separator), 1):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        name, sep, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        where = f"{source}, entry {number}"
        if not sep or not NAME_RE.match(name):
            raise ConfigError(
                f"{where}: expected 'name:token' with a name of letters, digits or _.@+- "
                f"(at most 64). {HOW_TO_MAKE}")
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise ConfigError(
                f"{where}: the token of {name!r} must be at least {MIN_TOKEN_LENGTH} characters "
                f"without spaces. {HOW_TO_MAKE}")
        pairs.append((name, token))
    return pairs


def load_tokens(tokens_file: str | Path | None = None,
                environ: Mapping[str, str] | None = None) -> TokenSet:
    """Tokens from ``tokens_file`` (one ``name:token`` a line) and ``$FEATSTORE_SERVICE_TOKENS``.

    Raises :class:`ConfigError` when there are none, or names or tokens repeat.
    """
    environ = os.environ if environ is None else environ
    pairs: list[tuple[str, str]] = []
    if tokens_file:
        path = Path(tokens_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"Cannot read the tokens file {path}: "
                              f"{err.strerror or err}.") from err
        pairs += parse_tokens(text, str(path))
    if environ.get(ENV_TOKENS):
        pairs += parse_tokens(environ[ENV_TOKENS], f"${ENV_TOKENS}", separator=",")
    if not pairs:
        raise ConfigError(
            f"The service needs at least one token: give --tokens-file FILE (one 'name:token' a "
            f"line) or set {ENV_TOKENS}='name:token'. {HOW_TO_MAKE}")
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"Token names must be unique; repeated: "
                          f"{sorted({n for n in names if names.count(n) > 1})}.")
    if len({t for _, t in pairs}) != len(pairs):
        raise ConfigError("Two token names share one token; give every name its own token.")
    return TokenSet(pairs)


def loose_permissions(tokens_file: str | Path) -> bool:
    """True when others than the owner may read the tokens file (worth a warning)."""
    try:
        return bool(Path(tokens_file).expanduser().stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False
