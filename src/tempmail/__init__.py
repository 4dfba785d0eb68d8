"""tempmail: a Postfix socketmap lookup service for temporary e-mail addresses."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# The distribution is "tempmail-socketmap" ("tempmail" on PyPI is an unrelated project); the
# import package and the command keep the name tempmail.
try:
    __version__ = version("tempmail-socketmap")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"

__all__ = ["__version__"]
