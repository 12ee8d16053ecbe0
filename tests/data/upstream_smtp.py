"""A real, independent SMTP server (aiosmtpd) used as the agent's upstream
in end-to-end tests. Every accepted message is written byte-for-byte to
OUT_DIR/<n>.eml with its envelope in OUT_DIR/<n>.json.

usage: upstream_smtp.py PORT OUT_DIR [--auth] [--max-size BYTES]

A recipient whose local part starts with "reject" is refused (550); a
message with a header "X-Test-Reply: <code> <text>" gets that final reply
and is not kept; "X-Test-Slow-Reply: <ms>" delays the (normal) reply.

With --auth it offers AUTH PLAIN, LOGIN (alice / s3cret) and XOAUTH2
(token "good-token"; a bad token gets the XOAUTH2 error continuation, a
334 with a base64 JSON status, before the 535), and records the login in
the envelope JSON.
"""
import asyncio
import base64
import json
import os
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alice" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, auth_data=auth_data)


class Saver:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def auth_XOAUTH2(self, server, args):
        if len(args) == 2:
            blob = base64.b64decode(args[1])
        else:
            blob = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(blob, bytes):
                return AuthResult(success=False, handled=True)
        fields = dict(kv.split(b"=", 1) for kv in blob.split(b"\x01") if b"=" in kv)
        if fields.get(b"auth") == b"Bearer good-token":
            return AuthResult(success=True, auth_data=fields.get(b"user", b"").decode())
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"})
        await server.challenge_auth(error, encode_to_b64=True)
        return AuthResult(success=False, handled=False, message="535 5.7.8 Username and Password not accepted")

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # A test can have a recipient refused: any local part starting with
        # "reject" gets a 550.
        if address.lower().startswith("reject"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"  # what aiosmtpd answers without a handler

    async def handle_DATA(self, server, session, envelope):
        # A test can choose the final reply: a header "X-Test-Reply: 451 ..."
        # is answered with that line and the message is not kept.
        for line in envelope.original_content.split(b"\r\n"):
            if line == b"":
                break
            if line.lower().startswith(b"x-test-reply: "):
                return line[len(b"x-test-reply: "):].decode("utf-8", "replace")
        self.n += 1
        base = os.path.join(self.out, "%06d" % self.n)
        # A test can ask for a slow answer after end-of-data: the message is
        # announced in OUT_DIR/<n>.pending first, so the test knows when the
        # agent is waiting for the reply.
        # "X-Test-Slow-Reply: <ms>": the reply (a normal 250) comes that
        # many milliseconds after end-of-data, for the relay's timings.
        for line in envelope.original_content.split(b"\r\n"):
            if line == b"":
                break
            if line.lower().startswith(b"x-test-slow-reply: "):
                await asyncio.sleep(int(line.split(b":", 1)[1]) / 1000)
        if b"X-Test-Delay-Reply: " in envelope.original_content:
            open(base + ".pending", "wb").write(envelope.original_content)
            await asyncio.sleep(30)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json", "w") as f:
            login = session.auth_data
            if isinstance(login, LoginPassword):
                login = login.login.decode()
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "mail_options": envelope.mail_options, "rcpt_options": envelope.rcpt_options,
                       "login": login}, f)
        os.rename(base + ".tmp", base + ".eml")
        return "250 2.0.0 Ok: queued as Q%06d" % self.n


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    extra = {}
    if "--max-size" in sys.argv[3:]:
        extra["data_size_limit"] = int(sys.argv[sys.argv.index("--max-size") + 1])
    if "--auth" in sys.argv[3:]:
        extra = dict(authenticator=authenticator, auth_require_tls=False)
    controller = Controller(Saver(out), hostname="127.0.0.1", port=port, decode_data=False, **extra)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
