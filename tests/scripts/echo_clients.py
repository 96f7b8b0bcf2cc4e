#!/usr/bin/env python3
"""N concurrent kernel MPTCP clients (IPPROTO_MPTCP sockets), each echoing
SIZE bytes through a server and checking them byte for byte.

usage: echo_clients.py HOST PORT N SIZE [TIMEOUT] [--hold | --sequential]

Phase 1: every client connects, sends SIZE bytes and reads SIZE back; one
JSON line reports it ({"phase": "echoed", ...}). With --hold the clients
then stay open until a line arrives on stdin (so a test can wait for the
server to see every second subflow). Phase 2: every client shuts down its
side and waits for the server's close; a last JSON line reports it.

With --sequential the N connections run one after another instead (each
connects, echoes, closes and waits for the server's close); the same two
lines report them.
"""
import json
import resource
import selectors
import socket
import sys
import time

IPPROTO_MPTCP = 262


def pattern(size):
    return bytes((i * 31 + 7) % 251 for i in range(size))


def sequential(host, port, n, size, timeout):
    data = pattern(size)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    exact = closed = 0
    errors = []
    lat = []
    start = time.monotonic()
    for _ in range(n):
        t0 = time.monotonic()
        try:
            s = socket.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
            s.settimeout(timeout)
            s.connect((host, port))
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while True:
                b = s.recv(262144)
                if not b:
                    break
                got += b
            exact += got == data
            closed += 1
            s.close()
            lat.append(time.monotonic() - t0)
        except OSError as e:
            errors.append(str(e))
    elapsed = time.monotonic() - start
    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None
    print(json.dumps({"phase": "echoed", "n": n, "size": size, "exact": exact,
                      "errors": len(errors), "first_error": errors[0] if errors else None,
                      "seconds": elapsed, "p50": pct(0.5), "p99": pct(0.99),
                      "max": lat[-1] if lat else None}), flush=True)
    print(json.dumps({"phase": "closed", "closed": closed}), flush=True)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    hold = "--hold" in sys.argv
    host, port, n, size = args[0], int(args[1]), int(args[2]), int(args[3])
    timeout = float(args[4]) if len(args) > 4 else 120.0
    if "--sequential" in sys.argv:
        return sequential(host, port, n, size, timeout)
    want = n + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data = pattern(size)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sel = selectors.DefaultSelector()
    conns = []
    start = time.monotonic()
    for _ in range(n):
        s = socket.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.setblocking(False)
        s.connect_ex((host, port))
        c = {"s": s, "sent": 0, "got": bytearray(), "err": None, "t0": time.monotonic(), "t": None}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    deadline = start + timeout
    pending = n
    while pending and time.monotonic() < deadline:
        for key, ev in sel.select(0.2):
            c = key.data
            s = c["s"]
            try:
                if ev & selectors.EVENT_WRITE and c["sent"] < size:
                    c["sent"] += s.send(data[c["sent"]:c["sent"] + 65536])
                    if c["sent"] == size:
                        sel.modify(s, selectors.EVENT_READ, c)
                if ev & selectors.EVENT_READ:
                    b = s.recv(262144)
                    if not b:
                        raise ConnectionError("closed early")
                    c["got"] += b
                    if len(c["got"]) >= size:
                        c["t"] = time.monotonic() - c["t0"]
                        sel.unregister(s)
                        pending -= 1
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                c["err"] = str(e)
                sel.unregister(s)
                pending -= 1
    elapsed = time.monotonic() - start
    exact = sum(1 for c in conns if c["got"] == data)
    errors = [c["err"] for c in conns if c["err"]]
    lat = sorted(c["t"] for c in conns if c["t"] is not None)
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None
    print(json.dumps({"phase": "echoed", "n": n, "size": size, "exact": exact,
                      "errors": len(errors), "first_error": errors[0] if errors else None,
                      "seconds": elapsed, "p50": pct(0.5), "p99": pct(0.99),
                      "max": lat[-1] if lat else None}), flush=True)
    if hold:
        sys.stdin.readline()
    for c in conns:
        try:
            c["s"].setblocking(True)
            c["s"].settimeout(10)
            c["s"].shutdown(socket.SHUT_WR)
        except OSError:
            pass
    closed = 0
    for c in conns:
        try:
            if c["s"].recv(1) == b"":
                closed += 1
        except OSError:
            pass
        c["s"].close()
    print(json.dumps({"phase": "closed", "closed": closed}), flush=True)


main()
