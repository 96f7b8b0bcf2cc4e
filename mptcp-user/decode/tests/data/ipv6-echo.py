import socket, sys, threading, time
IPPROTO_MPTCP = 262
role = sys.argv[1]
if role == "server":
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, IPPROTO_MPTCP)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", 8080)); srv.listen(1)
    c, _ = srv.accept()
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
else:
    cl = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, IPPROTO_MPTCP)
    cl.connect(("2001:db8:1::2", 8080))
    cl.sendall(bytes(range(256)) * 4)
    got = b""
    while len(got) < 1024: got += cl.recv(65536)
    time.sleep(0.5)  # let ADD_ADDR and joins happen
    cl.sendall(b"x" * 3000)
    while len(got) < 4024: got += cl.recv(65536)
    time.sleep(0.2)
    cl.close()
    print("client ok", len(got))
