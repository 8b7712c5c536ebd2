#!/usr/bin/env python3
"""A real HTTP server and client (Python's standard library) for the PEM's tests.

The PEM does not trace its own process, so the traffic it is tested on must come from
other processes: this script, run as a server and as a client.

    http_peer.py server [--bind ADDR]        prints its port, then serves until killed
    http_peer.py client SCENARIO --port P [--host ADDR] [--count N] [--tag T]

Each client scenario prints one JSON line describing what it sent and received.
"""
import argparse
import asyncio
import http.client
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK would hold every body back 40 ms.
    disable_nagle_algorithm = True
    server_version = "px-test/1.0"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status, body=b"", content_type="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self):
        length = int(self.headers.get("Content-Length", "0"))
        remaining, size, head = length, 0, b""
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            if len(head) < 1024:
                head += chunk[: 1024 - len(head)]
            size += len(chunk)
            remaining -= len(chunk)
        return size, head

    def do_HEAD(self):
        self._send(200, b"hello world\n")

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/hello":
            self._send(200, b"hello world\n", extra=[("X-Test", "yes"), ("Set-Cookie", "sid=n3w; Path=/")])
        elif path == "/json":
            self._send(200, b'{"ok": true}', content_type="application/json")
        elif path.startswith("/big/"):
            size = int(path.split("/")[2])
            self._send(200, b"b" * size)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first chunk;", b"second chunk;", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif path.startswith("/tag/"):
            # A body that is easy to recognise wherever it travels (the tests look for it
            # on the wire between Kelvin and the PEMs).
            self._send(200, b"TAGGED-RESPONSE-BODY " + b"t" * 400)
        elif path == "/nocontent":
            self.send_response(204)
            self.end_headers()
        else:
            self._send(404, b"not found\n")

    def do_POST(self):
        size, head = self._read_body()
        self._send(201, b"got %d bytes: %s" % (size, head[:32]))


def serve(bind):
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        request_queue_size = 2048
        daemon_threads = True

    server = Server((bind, 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response.status, data


def client(args):
    host, port = args.host, args.port
    out = {"pid": os.getpid()}
    if args.scenario == "basic":
        conn = http.client.HTTPConnection(host, port)
        out["get"] = request(conn, "GET", "/hello", headers={
            "X-Request": "abc", "Authorization": "Bearer tok-3f9a", "Cookie": "sid=c00k1e"})[0]
        out["post"] = request(conn, "POST", "/echo", body=b"ping=" + b"p" * 27,
                              headers={"Content-Type": "application/json"})[0]
        out["json"] = request(conn, "GET", "/json")[0]
        out["head"] = request(conn, "HEAD", "/hello")[0]
        out["nocontent"] = request(conn, "GET", "/nocontent")[0]
        conn.close()
    elif args.scenario == "keepalive":
        conn = http.client.HTTPConnection(host, port)
        out["statuses"] = [request(conn, "GET", f"/hello?i={i}")[0] for i in range(args.count)]
        conn.close()
    elif args.scenario == "pipeline":
        with socket.create_connection((host, port)) as sock:
            reqs = b"".join(
                b"GET /hello?p=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3))
            sock.sendall(reqs)
            data = b""
            while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"hello world\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            out["responses"] = data.count(b"HTTP/1.1 200")
    elif args.scenario == "chunked":
        conn = http.client.HTTPConnection(host, port)
        out["body"] = request(conn, "GET", "/chunked")[1].decode()
        conn.close()
    elif args.scenario == "big":
        size = 10 * 1024 * 1024
        conn = http.client.HTTPConnection(host, port)
        out["upload"] = request(conn, "POST", "/upload", body=b"u" * size)[0]
        out["download"] = len(request(conn, "GET", f"/big/{size}")[1])
        conn.close()
    elif args.scenario == "concurrent":
        out["ok"] = asyncio.run(concurrent(host, port, args.count))
    elif args.scenario == "garbage":
        # Not HTTP: a TLS-like record and random bytes, then a real request on a new
        # connection, which must still be captured.
        with socket.create_connection((host, port)) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(500))
            sock.settimeout(2)
            try:
                sock.recv(65536)
            except OSError:
                pass
        conn = http.client.HTTPConnection(host, port)
        out["after"] = request(conn, "GET", "/hello")[0]
        conn.close()
    elif args.scenario == "load":
        # Sustained keep-alive traffic with large headers and bodies, to fill tables.
        conn = http.client.HTTPConnection(host, port)
        pad, body = "x" * 2048, b"l" * 512
        ok = 0
        for i in range(args.count):
            status, _ = request(conn, "POST", f"/load?i={i}", body=body, headers={"X-Pad": pad})
            ok += status == 201
        conn.close()
        out["ok"] = ok
    elif args.scenario == "tagged":
        # GET /tag/TAG/0 .. /tag/TAG/4, round robin, on one keep-alive connection, with
        # --pause-ms between requests.
        conn = http.client.HTTPConnection(host, port)
        ok = 0
        for i in range(args.count):
            ok += request(conn, "GET", f"/tag/{args.tag}/{i % 5}")[0] == 200
            if args.pause_ms:
                time.sleep(args.pause_ms / 1000)
        out["ok"] = ok
        conn.close()
    elif args.scenario == "exact":
        # Known byte counts, for conn_stats.
        with socket.create_connection((host, port)) as sock:
            req = b"GET /hello HTTP/1.1\r\nHost: exact\r\nConnection: close\r\n\r\n"
            sock.sendall(req)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        out["sent"], out["received"] = len(req), len(data)
    else:
        sys.exit(f"unknown scenario {args.scenario}")
    print(json.dumps(out), flush=True)


async def concurrent(host, port, count):
    async def one(i):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /hello?c=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data.startswith(b"HTTP/1.1 200")

    results = await asyncio.gather(*(one(i) for i in range(count)))
    return sum(results)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", default="127.0.0.1")
    c = sub.add_parser("client")
    c.add_argument("scenario")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--count", type=int, default=100)
    c.add_argument("--tag", default="t")
    c.add_argument("--pause-ms", type=float, default=0)
    args = parser.parse_args()
    if args.mode == "server":
        serve(args.bind)
    else:
        client(args)


if __name__ == "__main__":
    main()
