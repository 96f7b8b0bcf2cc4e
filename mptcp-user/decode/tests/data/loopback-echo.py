import socket, sys, threading
IPPROTO_MPTCP = 262
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 8080)); srv.listen(1)
def serve():
    c, _ = srv.accept()
    data = b""
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
t = threading.Thread(target=serve); t.start()
cl = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
cl.connect(("127.0.0.1", 8080))
cl.sendall(bytes(range(256)) * 8)
got = b""
while len(got) < 2048:
    got += cl.recv(65536)
cl.shutdown(socket.SHUT_WR)
cl.recv(10)
cl.close(); t.join()
print("ok", len(got))
