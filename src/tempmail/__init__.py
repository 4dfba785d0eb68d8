"""tempmail: a Postfix socketmap lookup service for temporary e-mail addresses."""

from __future__ import annotations

import functools

#: The distribution's name: "tempmail" on PyPI is an unrelated project; the import package and
#: the command keep the name tempmail.
DISTRIBUTION = "tempmail-socketmap"


@functools.cache
def version() -> str:
    """The installed distribution's version: pyproject.toml's, the one place it is written.

    Read on first use, not at import: importlib.metadata alone takes about a third of the start
    of ``tempmail address``, which needs no version.
    """
    from importlib.metadata import PackageNotFoundError  # noqa: PLC0415
    from importlib.metadata import version as installed_version  # noqa: PLC0415

    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0+unknown"


def __getattr__(name: str) -> str:
    """``tempmail.__version__``, as packages have it, computed when asked for."""
    if name == "__version__":
        return version()
    message = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(message)
