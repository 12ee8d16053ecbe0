"""Probes the collector's TLS policy with Python's ssl module (OpenSSL).

usage: tls_probe.py PORT CA CERT KEY
Prints one line per probe: "<version> accepted|refused" and "plain refused"
(or "... untestable: why" when this client cannot even offer the version,
which the test treats as a failure rather than a pass).
"""
import socket
import ssl
import sys

port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

versions = [
    ("TLSv1", ssl.TLSVersion.TLSv1),
    ("TLSv1.1", ssl.TLSVersion.TLSv1_1),
    ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
    ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
]

for name, v in versions:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    # Let OpenSSL offer old versions at all (security level 0).
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = v
    ctx.maximum_version = v
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                print(f"{name} accepted ({t.version()})")
    except ssl.SSLError as e:
        msg = str(e)
        if "NO_PROTOCOLS_AVAILABLE" in msg or "no protocols available" in msg:
            print(f"{name} untestable: {msg}")
        else:
            print(f"{name} refused ({e.reason})")
    except OSError as e:
        print(f"{name} refused ({e})")

with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    if data.startswith(b"HTTP/"):
        print(f"plain answered: {data[:80]!r}")
    else:
        print(f"plain refused ({len(data)} bytes back, first {data[:1].hex() or 'none'})")
