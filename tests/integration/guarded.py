"""A stack whose Postfix is configured as the README says: with `tempmail postfix-config`.

The lines are printed by the sidecar image itself (a one-off container with the sidecar's
config and secret mounts, told where Postfix sees the socket), exactly as an operator runs
it, and handed to the Postfix image, whose entrypoint applies them with the README's
``xargs -r -d '\\n' postconf -e``. Nothing in the test writes a main.cf line by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from testcontainers.core.container import DockerContainer

from .conftest import Images
from .stack import POSTFIX_SOCKET_DIR, Stack, base_config

#: What the operator runs in the sidecar image (its entrypoint is `tempmail`).
POSTFIX_CONFIG_COMMAND = ["postfix-config", "--postfix-socket", f"{POSTFIX_SOCKET_DIR}/socket"]


class GuardedStack(Stack):
    """A :class:`Stack` whose Postfix gets ``TEMPMAIL_POSTFIX_CONFIG`` (see the module)."""

    postfix_config: str = ""

    def _postfix_container(self) -> DockerContainer:
        status, output = self.run_sidecar_image(POSTFIX_CONFIG_COMMAND)
        assert status == 0, f"tempmail postfix-config in the sidecar image: {status}: {output}"
        self.postfix_config = output
        return super()._postfix_container().with_env("TEMPMAIL_POSTFIX_CONFIG", output)


def guarded_stacks(images: Images) -> Iterator[Callable[..., GuardedStack]]:
    """For module fixtures: yields make(config, **kwargs); every stack is removed after."""
    started: list[GuardedStack] = []

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> GuardedStack:
        stack = GuardedStack(
            images.client, images.sidecar, images.postfix, config or base_config(), **kwargs
        )
        started.append(stack)
        stack.start()
        print(f"\nguarded stack {stack.name} ready in {stack.started_in:.2f} s")
        return stack

    try:
        yield make
    finally:
        for stack in started:
            stack.close()
