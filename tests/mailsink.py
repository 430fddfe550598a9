"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, for mail tests."""
from __future__ import annotations

import email
import re
import time
from contextlib import contextmanager

from panel.testing import free_port


class Inbox:
    """Messages received by the sink: ``{"to": [...], "subject", "body"}``."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content)
        if msg.is_multipart():  # a body and attachments: {"filename", "type", "data"}
            parts = [p for p in msg.walk() if not p.is_multipart()]
            body = next(p for p in parts if p.get_content_type() == "text/plain" and not p.get_filename())
            attachments = [{"filename": p.get_filename(), "type": p.get_content_type(),
                            "data": p.get_payload(decode=True)} for p in parts if p.get_filename()]
        else:
            body, attachments = msg, []
        self.messages.append({"to": list(envelope.rcpt_tos), "subject": msg["Subject"],
                              "body": body.get_payload(decode=True).decode(), "attachments": attachments})
        return "250 OK"

    def wait_for(self, n, timeout=10):
        """The messages, once at least ``n`` arrived (or ``timeout`` seconds passed)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages

    def link(self, index=-1):
        """The first URL in message ``index``."""
        return re.search(r"https?://\S+", self.messages[index]["body"]).group(0)


@contextmanager
def smtp_sink():
    """Start an aiosmtpd server on 127.0.0.1; yields ``(inbox, port)`` and stops it afterwards."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()
