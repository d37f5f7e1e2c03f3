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
    if not smtp.host:
        raise MailError("no mail server configured ([smtp] host)")
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=15) as conn:
            if smtp.starttls:
                conn.starttls(context=ssl.create_default_context())
            if smtp.username:
                conn.login(smtp.username, smtp.password)
            conn.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"mail to {to} failed: {exc}") from exc
