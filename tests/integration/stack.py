"""A tempmail sidecar and a Postfix container sharing a socket volume, driven from the host.

A :class:`Stack` is put together from the pieces, each in a module of its own: the sidecar
(sidecar.py), Postfix (postfix_container.py), SMTP from the host (sending.py) and the
recipient's Maildir (mailbox.py). Tests use the pieces through the stack's attributes:
``stack.sidecar.stop()``, ``stack.smtp.rcpt(address)``, ``stack.mailbox.wait_for(subject)``.

Postfix is configured as the README says: with the lines ``tempmail postfix-config`` prints in
the sidecar image for this config (the guard in front of the socketmap), unless a test gives
other lines (the controls without the guard).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import docker.errors

from .engine import LABELS, Images, free_port
from .mailbox import Mailbox
from .postfix_container import POSTFIX_SOCKET_DIR, PostfixContainer, with_other_domains
from .sending import Smtp
from .sidecar import Sidecar, base_config

#: A domain Postfix serves as a virtual alias domain of its own, which no identity owns.
OTHER_DOMAIN = "example.net"


class Stack:
    """One sidecar, one Postfix and their socket volume. Use :meth:`start` and :meth:`close`.

    ``order`` says which container starts first (Docker copies the first mount point into the
    empty volume: both images must agree on its owner and mode). ``postfix_lines`` replaces
    the printed lines; ``other_domains`` are added to their virtual_alias_domains.
    """

    def __init__(
        self,
        images: Images,
        config: dict[str, Any] | None = None,
        *,
        order: Literal["sidecar-first", "postfix-first"] = "sidecar-first",
        postfix_lines: str | None = None,
        other_domains: tuple[str, ...] = (),
        extra_secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.images = images
        self.order = order
        self.other_domains = other_domains
        self.name = f"tempmail-it-{uuid.uuid4().hex[:8]}"
        self.volume_name = f"{self.name}-socket"
        self.sidecar = Sidecar(
            images.client,
            images.sidecar,
            f"{self.name}-sidecar",
            self.volume_name,
            config or base_config(),
            extra_secrets=extra_secrets,
        )
        self._postfix_lines = postfix_lines
        self._postfix: PostfixContainer | None = None
        self.smtp = Smtp(free_port())
        self._volume: Any = None
        self.started_in: float | None = None

    @property
    def postfix(self) -> PostfixContainer:
        assert self._postfix is not None, f"{self.name} is not started"
        return self._postfix

    @property
    def mailbox(self) -> Mailbox:
        """The permanent recipient's Maildir in the Postfix container."""
        return Mailbox(self.postfix.docker)

    def start(self) -> Stack:
        self.sidecar.write_files()
        t0 = time.monotonic()
        lines = self._postfix_lines
        if lines is None:
            lines = self.sidecar.postfix_config(f"{POSTFIX_SOCKET_DIR}/socket")
        self._postfix = PostfixContainer(
            self.images.client,
            self.images.postfix,
            f"{self.name}-postfix",
            self.volume_name,
            self.smtp.port,
            with_other_domains(lines, self.other_domains),
        )
        self._volume = self.images.client.volumes.create(self.volume_name, labels=LABELS)
        if self.order == "postfix-first":
            self._postfix.start()
            self.sidecar.start()
        else:
            self.sidecar.start()
            self._postfix.start()
        self.started_in = time.monotonic() - t0
        return self

    def close(self) -> None:
        """Remove both containers, the volume and the host files (twice is harmless)."""
        if self._postfix is not None:
            self._postfix.close()
        self.sidecar.close()
        if self._volume is not None:
            with contextlib.suppress(docker.errors.APIError):
                self._volume.remove(force=True)


@contextlib.contextmanager
def stacks(images: Images) -> Iterator[Callable[..., Stack]]:
    """``make(config, **options) -> Stack`` for a fixture; every stack is removed at the end."""
    started: list[Stack] = []

    def make(config: dict[str, Any] | None = None, **options: Any) -> Stack:
        stack = Stack(images, config, **options)
        started.append(stack)
        stack.start()
        print(f"\nstack {stack.name} ({stack.order}) ready in {stack.started_in:.2f} s")
        return stack

    try:
        yield make
    finally:
        for stack in started:
            stack.close()
