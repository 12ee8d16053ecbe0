"""A real, independent SMTP server (aiosmtpd) used as the agent's upstream
in end-to-end tests. Every accepted message is written byte-for-byte to
OUT_DIR/<n>.eml with its envelope in OUT_DIR/<n>.json.

usage: upstream_smtp.py PORT OUT_DIR
"""
import asyncio
import json
import os
import sys

from aiosmtpd.controller import Controller


class Saver:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        base = os.path.join(self.out, "%06d" % self.n)
        # A test can ask for a slow answer after end-of-data: the message is
        # announced in OUT_DIR/<n>.pending first, so the test knows when the
        # agent is waiting for the reply.
        if b"X-Test-Delay-Reply: " in envelope.original_content:
            open(base + ".pending", "wb").write(envelope.original_content)
            await asyncio.sleep(30)
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}, f)
        os.rename(base + ".tmp", base + ".eml")
        return "250 2.0.0 Ok: queued as Q%06d" % self.n


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    controller = Controller(Saver(out), hostname="127.0.0.1", port=port, decode_data=False)
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
