"""A minimal HTTP/1.0 responder for the TCP_CRR rows (`python -m bench.tcp_httpd ADDR PORT`).

One process, one thread, blocking: accept, read the request, answer with a fixed 2-byte body and
`Connection: close`, close. wrk (run with `-H "Connection: close"`) opens a new connection for every
request, so each transaction is connect + request + response + close, as netperf's TCP_CRR. The
server does as little as Python allows per connection, and it is the same for every CNI compared.
"""

from __future__ import annotations

import socket
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def serve(addr: str, port: int) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1024)
    while True:
        conn, _ = srv.accept()
        try:
            if conn.recv(4096):
                conn.sendall(RESPONSE)
        except OSError:
            pass
        conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
