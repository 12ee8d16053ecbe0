"""Sends many raw messages with Python's smtplib (a real SMTP client we did
not write), one transaction per file, all over one connection (a new one
only if the server drops it), and prints each final reply as JSON.

The files are sent as they are: the caller gives them CRLF line endings
(smtplib would convert bare LFs itself, and the test compares with the
bytes it wrote).

usage: send_batch.py PORT MAIL_FROM RCPT[,RCPT...] FILE...
prints: [{"file": ..., "code": 250, "reply": "..."}, ...]
"""
import json
import smtplib
import sys


def connect(port):
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    s.ehlo("batch.test")
    return s


def main():
    port, sender, rcpts, files = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
    s = connect(port)
    out = []
    for path in files:
        with open(path, "rb") as f:
            msg = f.read()
        if s is None:
            s = connect(port)
        stage = "mail"
        try:
            code, reply = s.mail(sender)
            if code == 250:
                stage = "rcpt"
                for r in rcpts:
                    s.rcpt(r)
                stage = "data"
                code, reply = s.data(msg)
            if code != 250:
                s.rset()
        except smtplib.SMTPServerDisconnected as e:
            code, reply, s = 0, str(e).encode(), None
        except smtplib.SMTPResponseException as e:
            code, reply = e.smtp_code, e.smtp_error
            s.rset()
        out.append({"file": path, "code": code, "reply": reply.decode("latin-1"), "stage": stage})
    if s is not None:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass
    print(json.dumps(out))


if __name__ == "__main__":
    main()
