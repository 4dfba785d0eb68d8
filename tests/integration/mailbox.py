"""What arrived: the Maildirs inside a Postfix container, read through the engine."""

from __future__ import annotations

import email
import email.policy
import io
import tarfile
from collections import Counter
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import docker.errors

from helpers import wait_until

#: The Maildir of user@localhost, the permanent recipient in the example Postfix image.
MAILDIR = "/home/user/Maildir"


def maildir_messages(container: Any, maildir: str = MAILDIR) -> list[EmailMessage]:
    """Every message in a Maildir (new/ and cur/) of a docker SDK container, parsed."""
    try:
        stream, _ = container.get_archive(maildir)
    except docker.errors.NotFound:  # local(8) creates the Maildir at the first delivery
        return []
    found = []
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 2 and parts[-2] in ("new", "cur"):
                data = archive.extractfile(member)
                assert data is not None
                parsed = email.message_from_bytes(data.read(), policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                found.append(parsed)
    return found


def subject_counts(messages: list[EmailMessage]) -> Counter[str]:
    """How often each subject arrived."""
    return Counter(str(m["Subject"]) for m in messages)


class Mailbox:
    """One Maildir in a container; ``container`` returns the docker SDK container."""

    def __init__(self, container: Callable[[], Any], maildir: str = MAILDIR) -> None:
        self._container = container
        self.maildir = maildir

    def messages(self) -> list[EmailMessage]:
        """Every message in it (new/ and cur/), parsed."""
        return maildir_messages(self._container(), self.maildir)

    def find(self, subject: str) -> EmailMessage | None:
        return next((m for m in self.messages() if m["Subject"] == subject), None)

    def wait_for(self, subject: str, timeout: float = 30) -> EmailMessage:
        """The message with ``subject``, once it has arrived."""
        return wait_until(
            lambda: self.find(subject), timeout, 0.1, f"mail {subject!r} in {self.maildir}"
        )
