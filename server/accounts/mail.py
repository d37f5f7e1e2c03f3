"""Outgoing mail (login PINs, password resets) over SMTP as configured in [smtp].

FAQ: "PINs for the clinic login will be sent by mail to your clinic mail address."
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from server.config import SmtpSection


class MailError(RuntimeError):
    """The mail could not be handed to the mail server."""


def send(smtp: SmtpSection, to: str, subject: str, body: str) -> None:
    """Hand one mail to the mail server, or MailError (never another exception: callers on
    public routes must answer the same whether or not a mail went out)."""
    if not smtp.host:
        raise MailError("no mail server configured ([smtp] host)")
    try:
        msg = EmailMessage()
        msg["From"] = smtp.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        with smtplib.SMTP(smtp.host, smtp.port, timeout=15) as conn:
            if smtp.starttls:
                conn.starttls(context=ssl.create_default_context())
            if smtp.username:
                conn.login(smtp.username, smtp.password)
            conn.send_message(msg)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        # ValueError: an address no header can carry (CR/LF, non-ASCII without SMTPUTF8)
        raise MailError(f"mail to {to!r} failed: {exc}") from exc
