"""An SMTP server that accepts connections and waits before greeting (a
stuck or overloaded MTA), for testing the relay's greeting timeout and
its upstream_timeout incidents. Each connection gets its own thread.

usage: slow_greeting_smtp.py PORT DELAY_SECONDS
"""
import socket
import sys
import threading
import time


def serve(c, delay):
    try:
        time.sleep(delay)
        c.sendall(b"220 slow.example ESMTP finally\r\n")
        c.recv(1024)
    except OSError:
        pass
    finally:
        c.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(128)
    delay = float(sys.argv[2])
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, delay), daemon=True).start()


if __name__ == "__main__":
    main()
