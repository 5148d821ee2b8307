"""Smoke test of an installed wssync: start its console script, check it serves, stop it.

Usage: python .ci/smoke.py PATH/TO/wssync
"""

import http.client
import signal
import socket
import subprocess
import sys
import time

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
server = subprocess.Popen([sys.argv[1], "--host", "127.0.0.1", "--port", str(port)],
                          stderr=subprocess.PIPE, text=True)
try:
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            response = conn.getresponse()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit(f"smoke: {sys.argv[1]} did not serve")
            time.sleep(0.1)
    body = response.read()
    if response.status != 200 or body != b"ok\n":
        sys.exit(f"smoke: /health answered {response.status} {body!r}")
    conn.request("GET", "/")
    page = conn.getresponse().read()
    if b"wssync" not in page:
        sys.exit("smoke: the demo page is missing")
finally:
    server.send_signal(signal.SIGTERM)
    _, err = server.communicate(timeout=20)
if server.returncode != 0 or "Traceback" in err:
    sys.exit(f"smoke: bad exit {server.returncode}: {err}")
print(f"smoke: {sys.argv[1]} served /health and the demo page, stopped cleanly")
