"""A real SMTP server for the e-mail alert test (aiosmtpd from PyPI).

Usage: smtp_server.py PORT OUTDIR REFUSE_FIRST
Answers the first REFUSE_FIRST messages with 451 (try again later), then takes each message
and writes it, decoded, as OUTDIR/<n>.json: from, to, subject, body.
"""
import asyncio
import email
import email.header
import email.policy
import json
import pathlib
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, outdir, refuse_first):
        self.outdir = pathlib.Path(outdir)
        self.refuse_first = refuse_first
        self.seen = 0

    async def handle_DATA(self, server, session, envelope):
        self.seen += 1
        if self.seen <= self.refuse_first:
            return "451 4.3.0 Try again later"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        record = {
            "from": str(msg["From"]),
            "to": [str(t) for t in msg.get_all("To", [])],
            "rcpt": list(envelope.rcpt_tos),
            "subject": str(msg["Subject"]),
            "body": msg.get_body(preferencelist=("plain",)).get_content(),
        }
        n = len(list(self.outdir.glob("*.json"))) + 1
        tmp = self.outdir / f"{n}.tmp"
        tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        tmp.rename(self.outdir / f"{n}.json")
        return "250 OK"


async def main():
    port, outdir, refuse_first = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    controller = Controller(Handler(outdir, refuse_first), hostname="127.0.0.1", port=port)
    controller.start()
    (pathlib.Path(outdir) / "ready").write_text("ready")
    while True:
        await asyncio.sleep(3600)


asyncio.run(main())
