"""Relays every message of CPython's email test corpus through an SMTP
server with smtplib (one connection, one transaction per message) and
prints, per message, what was sent and what Python's own `email` package
reads in it, as JSON, for the Rust test to compare with the records.

usage: corpus_relay.py PORT CORPUS_DIR
"""
import email
import email.policy
import glob
import hashlib
import json
import os
import re
import smtplib
import sys


def wire_form(data):
    # What smtplib puts on the wire (its _fix_eols), ending in CRLF.
    data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def main():
    port, corpus = int(sys.argv[1]), sys.argv[2]
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    s.ehlo("corpus.test")
    out = []
    for path in sorted(glob.glob(os.path.join(corpus, "msg_*.txt"))):
        data = wire_form(open(path, "rb").read())
        try:
            s.sendmail("corpus@example.com", ["sink@example.org"], data)
            code = 250
        except smtplib.SMTPResponseException as e:
            code = e.smtp_code
        m = email.message_from_bytes(data, policy=email.policy.default)
        try:
            subject = str(m["subject"]) if m["subject"] is not None else ""
        except Exception:
            subject = None
        try:
            senders = [a.addr_spec for a in m["from"].addresses] if m["from"] else []
        except Exception:
            senders = None
        out.append({
            "file": os.path.basename(path),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "code": code,
            "subject": subject,
            "from": senders,
        })
    s.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
