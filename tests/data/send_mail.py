"""Sends one raw message with Python's smtplib (a real SMTP client we did not
write) and prints the server's final reply as JSON.

usage: send_mail.py PORT MAIL_FROM RCPT[,RCPT...] MESSAGE_FILE [SOURCE_ADDRESS [USER:PASSWORD]]

SOURCE_ADDRESS: the client's own address (e.g. 127.0.0.2, a client that is
not the agent's host); USER:PASSWORD: log in with AUTH PLAIN first.
"""
import json
import smtplib
import sys


def main():
    port, sender, rcpts, path = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(","), sys.argv[4]
    with open(path, "rb") as f:
        msg = f.read()
    source = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    s = smtplib.SMTP("127.0.0.1", port, timeout=60,
                     source_address=(source, 0) if source else None)
    s.ehlo("client.test")
    if len(sys.argv) > 6:
        user, password = sys.argv[6].split(":", 1)
        s.login(user, password)
    code, reply = s.mail(sender)
    if code != 250:
        print(json.dumps({"code": code, "reply": reply.decode("latin-1"), "stage": "mail"}))
        return
    for r in rcpts:
        s.rcpt(r)
    code, reply = s.data(msg)
    print(json.dumps({"code": code, "reply": reply.decode("latin-1"), "stage": "data"}), flush=True)
    try:
        s.quit()
    except Exception:
        pass


if __name__ == "__main__":
    main()
