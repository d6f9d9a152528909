#!/usr/bin/env python3
"""2,000 half-sent request heads against a real `racklift serve`: its
resident memory before, while they are open, and after the header-read
timeout closed them. Usage: bench-slow-connections.py RACKLIFT_BINARY"""
import os, socket, subprocess, sys, tempfile, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def main():
    binary = sys.argv[1]
    port = 18000 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, RACKLIFT__DATA_DIR=d,
                   RACKLIFT__HTTP__LISTEN=f"127.0.0.1:{port}",
                   RACKLIFT__HTTP__HEADER_READ_TIMEOUT="5s",
                   RACKLIFT__PROFILES__DIR=os.path.join(d, "profiles"),
                   RUST_LOG="warn")
        p = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            before = rss_kib(p.pid)
            conns = []
            for i in range(2000):
                c = socket.create_connection(("127.0.0.1", port))
                c.sendall(b"GET /assets/x HTTP/1.1\r\nHost: a\r\n" if i % 2 == 0
                          else b"POST /v1/nodes HTTP/1.1\r\nHost: a\r\n")
                conns.append(c)
            time.sleep(1)
            held = rss_kib(p.pid)
            start = time.time()
            for c in conns:
                c.settimeout(60)
                try:
                    while c.recv(65536):
                        pass
                except OSError:
                    pass
            closed_after = time.time() - start + 1
            time.sleep(1)
            after = rss_kib(p.pid)
            print(f"racklift serve RSS: {before/1024:.1f} MiB idle, {held/1024:.1f} MiB "
                  f"with 2,000 half-sent heads, {after/1024:.1f} MiB after; "
                  f"all closed {closed_after:.1f} s after sending (header_read_timeout 5s)")
        finally:
            p.terminate()
            p.wait()

main()
