"""An SMTP server that refuses every connection with a 554 greeting
(RFC 5321 3.1), for testing how the relay passes that on.

usage: refusing_smtp.py PORT
"""
import socket
import sys


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(16)
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.sendall(b"554 5.3.2 mx.example not accepting mail from you\r\n")
        c.close()


if __name__ == "__main__":
    main()
