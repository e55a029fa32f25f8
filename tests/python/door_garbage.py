"""Opens an exec through kbastion's kubectl door over WebSocket (v5), then
sends bytes that are no WebSocket frames; prints what happened as JSON:
the upgrade's status line and whether the door closed the stream."""
import base64
import json
import os
import socket
import ssl
import sys

host, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((host, port), timeout=20)
conn = context.wrap_socket(raw, server_hostname=host)
key = base64.b64encode(os.urandom(16)).decode()
path = ("/api/v1/namespaces/default/pods/web-0/exec"
        "?command=sleep&command=1000&container=app&stdout=true&stderr=true")
conn.sendall((
    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    f"Authorization: Bearer {token}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    f"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
).encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = conn.recv(4096)
    if not chunk:
        break
    head += chunk
status = head.split(b"\r\n", 1)[0].decode(errors="replace")
conn.sendall(b"\xff" * 4096)
closed = False
try:
    while True:
        data = conn.recv(4096)
        if not data:
            closed = True
            break
except (ssl.SSLError, ConnectionResetError, socket.timeout) as error:
    closed = not isinstance(error, socket.timeout)
print(json.dumps({"status": status, "closed": closed}))
