#!/usr/bin/env python3
"""The kernel's MPTCP as an echo server (an IPPROTO_MPTCP listening socket,
non-blocking, one selector for every connection): the reference the scale
benchmark compares the engine with.

usage: echo_server.py ADDR PORT
Prints "ready" once listening; runs until killed.
"""
import resource
import selectors
import socket
import sys

IPPROTO_MPTCP = 262


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(16384)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    print("ready", flush=True)
    pending = {}
    while True:
        for key, ev in sel.select():
            if key.data is None:
                while True:
                    try:
                        c, _ = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, "c")
                continue
            c = key.fileobj
            if ev & selectors.EVENT_WRITE:
                buf = pending[c]
                try:
                    n = c.send(buf)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    sel.unregister(c)
                    c.close()
                    pending.pop(c, None)
                    continue
                if n < len(buf):
                    pending[c] = buf[n:]
                    continue
                del pending[c]
                sel.modify(c, selectors.EVENT_READ, "c")
                continue
            try:
                b = c.recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                b = b""
            if not b:
                sel.unregister(c)
                c.close()
                continue
            try:
                n = c.send(b)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                sel.unregister(c)
                c.close()
                continue
            if n < len(b):
                pending[c] = b[n:]
                sel.modify(c, selectors.EVENT_WRITE, "c")


main()
