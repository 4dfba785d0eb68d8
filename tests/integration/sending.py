"""SMTP from the host to a stack's Postfix, as a sending MTA speaks it.

:meth:`Smtp.rcpt` asks what Postfix answers for one recipient; :meth:`Smtp.send` sends one
message; :meth:`Smtp.send_until_accepted` retries every temporary failure (4xx at RCPT or
after DATA, a lost connection) with a growing delay, as an MTA's queue would, and fails at
once on a 5xx.
"""

from __future__ import annotations

import contextlib
import email.policy
import smtplib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage

SENDER = "sender@localhost"


def make_message(to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def unique_subject(label: str) -> str:
    """A subject no other test uses (they share Maildirs), with a non-ASCII word."""
    return f"{label} Grüße {uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class SmtpResult:
    """Postfix's reply to one command."""

    code: int
    text: str

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


@dataclass
class Attempts:
    """What sending one message took: the temporary failures seen before it was accepted."""

    failures: list[str] = field(default_factory=list)


class Smtp:
    """A client of the SMTP server on 127.0.0.1:``port``."""

    def __init__(self, port: int) -> None:
        self.port = port

    @contextlib.contextmanager
    def session(self, timeout: float = 30) -> Iterator[smtplib.SMTP]:
        """One connection, after EHLO."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=timeout) as client:
            client.ehlo("client.test")
            yield client

    def rcpt(self, address: str) -> SmtpResult:
        """MAIL FROM and RCPT TO only: what Postfix answers for ``address``."""
        with self.session() as client:
            client.mail(SENDER)
            code, text = client.rcpt(address)
            return SmtpResult(code, text.decode(errors="replace"))

    def send(self, address: str, subject: str, body: str = "hello\n") -> None:
        """Send one message; raises smtplib's exceptions when Postfix refuses it."""
        # Serialised here: smtplib's send_message would quote "From " lines in the body.
        data = make_message(address, subject, body).as_bytes(policy=email.policy.SMTP)
        with self.session() as client:
            client.sendmail(SENDER, [address], data, mail_options=["BODY=8BITMIME"])

    def send_until_accepted(
        self, address: str, subject: str, body: str = "hello\n", deadline: float = 60
    ) -> Attempts:
        """Send until Postfix accepts the message; retry 4xx and lost connections, fail on 5xx
        or after ``deadline`` seconds. Returns the temporary failures seen."""
        attempts = Attempts()
        give_up = time.monotonic() + deadline
        delay = 0.05
        while True:
            try:
                self.send(address, subject, body)
            except smtplib.SMTPRecipientsRefused as exc:
                code = next(iter(exc.recipients.values()))[0]
                if not 400 <= code < 500:
                    raise
                attempts.failures.append(f"RCPT {code}")
            except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
                if not 400 <= exc.smtp_code < 500:
                    raise
                kind = "DATA" if isinstance(exc, smtplib.SMTPDataError) else "MAIL"
                attempts.failures.append(f"{kind} {exc.smtp_code}")
            except (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError) as exc:
                attempts.failures.append(type(exc).__name__)
            else:
                return attempts
            if time.monotonic() > give_up:
                raise TimeoutError(f"{subject!r} not accepted within {deadline} s: {attempts}")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
