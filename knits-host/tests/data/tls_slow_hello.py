#!/usr/bin/env python3
"""A TLS client whose ClientHello arrives in pieces (used by knits-host/tests/https.rs).

usage: tls_slow_hello.py HOST PORT NAME CAFILE PATH OUT PIECE RECORD

Python's ssl makes the ClientHello into a memory BIO; this script reframes it into handshake
records of at most RECORD bytes (the transcript hash covers handshake messages, not records, so
the server accepts it) and writes it PIECE bytes at a time, each as a TCP segment of its own.
Then it completes the handshake, sends `GET PATH`, checks the certificate name, writes the body
to OUT and prints the response's x-knits-node and x-tls-node headers.
"""
import socket
import ssl
import sys
import time

host, port, name, cafile, path, out = sys.argv[1:7]
piece, record = int(sys.argv[7]), int(sys.argv[8])

ctx = ssl.create_default_context(cafile=cafile)
ctx.set_alpn_protocols(["http/1.1"])
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
sock = socket.create_connection((host, int(port)), timeout=20)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = outgoing.read()
assert hello[0] == 22, hello[:5]
msg = hello[5:]
wire = b""
for i in range(0, len(msg), record):
    frag = msg[i:i + record]
    wire += bytes([22, 3, 1]) + len(frag).to_bytes(2, "big") + frag
started = time.monotonic()
try:
    for i in range(0, len(wire), piece):
        sock.sendall(wire[i:i + piece])
        time.sleep(0.002)
except OSError as e:
    sys.exit(f"the server closed after {i} of {len(wire)} hello bytes, "
             f"{time.monotonic() - started:.2f} s after the first: {e}")


def pump():
    data = outgoing.read()
    if data:
        sock.sendall(data)


def call(f, *a):
    while True:
        try:
            r = f(*a)
            pump()
            return r
        except ssl.SSLWantReadError:
            pump()
            data = sock.recv(65536)
            if not data:
                raise EOFError("server closed")
            incoming.write(data)


call(tls.do_handshake)
cert = tls.getpeercert()
names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
call(tls.write, f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
resp = b""
while True:
    try:
        data = call(tls.read, 65536)
    except (ssl.SSLZeroReturnError, EOFError):
        break
    if not data:
        break
    resp += data
head, _, body = resp.partition(b"\r\n\r\n")
headers = {}
for line in head.split(b"\r\n")[1:]:
    k, _, v = line.partition(b":")
    headers[k.strip().lower().decode()] = v.strip().decode()
open(out, "wb").write(body)
print(headers.get("x-knits-node", "-"), headers.get("x-tls-node", "-"), names[0], len(body))
