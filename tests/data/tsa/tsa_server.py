#!/usr/bin/env python3
"""A local RFC 3161 Time-Stamp Authority for Kiroku's tests.

Usage: tsa_server.py PORT WORKDIR

At start it makes, in WORKDIR, a TSA CA (ca.pem) and a TSA certificate
(tsa.pem, extended key usage timeStamping, critical, as RFC 3161 asks)
with OpenSSL, then answers HTTP POSTs of `application/timestamp-query` on
127.0.0.1:PORT with `openssl ts -reply` (the TSA OpenSSL ships), as
`application/timestamp-reply`. Every request and its outcome is logged on
stdout. The certificates exist before the port opens, so a test may read
ca.pem as soon as it can connect.
"""

import http.server
import os
import subprocess
import sys
import tempfile
import threading

CONFIG = """
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/ca.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

EXT = """
[ tsa_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_pki(d):
    """CA and TSA keys (EC P-256) and certificates, valid a day around now."""
    if os.path.exists(os.path.join(d, "tsa.pem")):
        return
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, cert = (os.path.join(d, n) for n in ("tsa.key", "tsa.csr", "tsa.pem"))
    ext = os.path.join(d, "tsa_ext.cnf")
    with open(ext, "w") as f:
        f.write(EXT)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=Kiroku test TSA CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=Kiroku test TSA")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext, "-extensions", "tsa_ext")
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("01\n")
    with open(os.path.join(d, "tsa.cnf"), "w") as f:
        f.write(CONFIG.format(dir=d))


class Handler(http.server.BaseHTTPRequestHandler):
    lock = threading.Lock()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        query = self.rfile.read(length)
        d = self.server.workdir
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            q, r = os.path.join(tmp, "q.tsq"), os.path.join(tmp, "r.tsr")
            with open(q, "wb") as f:
                f.write(query)
            # The serial file is shared: one reply at a time.
            with Handler.lock:
                p = subprocess.run(
                    ["openssl", "ts", "-reply", "-config", os.path.join(d, "tsa.cnf"),
                     "-queryfile", q, "-out", r],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if p.returncode != 0 or not os.path.exists(r):
                print("refused:", p.stderr.decode(errors="replace").strip(), flush=True)
                self.send_response(400)
                self.end_headers()
                return
            with open(r, "rb") as f:
                reply = f.read()
        print(f"stamped a {length}-byte query", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, fmt, *args):
        pass


def main():
    port, workdir = int(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(workdir, exist_ok=True)
    make_pki(workdir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.workdir = workdir
    print(f"TSA listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
