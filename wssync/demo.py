"""The demo app served by ``python -m wssync`` when no ``--app`` is given.

It shows the point of the project: the page at ``/`` and the WebSocket at
``/ws`` share one server port, and ``/stats`` lists every open connection
with its TCP 5-tuple and current protocol.
"""

from __future__ import annotations

from typing import Union

from .app import App
from .request import Request
from .response import Response
from .websocket import WebSocket

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wssync demo</title>
<style>
 body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 60em; padding: 0 1em; }
 #log { border: 1px solid #ccc; height: 12em; overflow-y: auto; padding: .5em; font-family: monospace; }
 table { border-collapse: collapse; margin-top: .5em; }
 td, th { border: 1px solid #ccc; padding: .2em .6em; font-family: monospace; text-align: left; }
 .websocket { background: #e8f4ff; }
</style>
</head>
<body>
<h1>wssync: HTTP and WebSocket on one port</h1>
<p>This page came over HTTP. The box below talks to <code>/ws</code> over a WebSocket on the
same host and port: after the <code>101 Switching Protocols</code> answer, that one TCP
connection speaks WebSocket while new connections keep starting as HTTP.</p>
<p>Status: <b id="status">connecting&hellip;</b></p>
<form id="form"><input id="text" size="40" value="hello" autocomplete="off">
<button id="send" type="submit">Send</button></form>
<div id="log"></div>
<h2>Open connections (<code>/stats</code>, refreshed every 2 s)</h2>
<div id="stats"></div>
<script>
const log = (line) => {
  const el = document.getElementById("log");
  const div = document.createElement("div");
  div.textContent = line;
  el.appendChild(div);
  el.scrollTop = el.scrollHeight;
};
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/ws");
ws.onopen = () => { document.getElementById("status").textContent = "open"; log("open"); };
ws.onmessage = (e) => log("echo: " + e.data);
ws.onclose = (e) => {
  document.getElementById("status").textContent = "closed (" + e.code + ")";
  log("closed " + e.code);
};
document.getElementById("form").onsubmit = (e) => {
  e.preventDefault();
  const text = document.getElementById("text").value;
  ws.send(text);
  log("sent: " + text);
};
async function refresh() {
  try {
    const data = await (await fetch("/stats")).json();
    const rows = data.connections.map((c) =>
      `<tr class="${c.protocol}"><td>${c.transport}</td><td>${c.client_addr}:${c.client_port}</td>` +
      `<td>${c.server_addr}:${c.server_port}</td><td>${c.protocol}</td><td>${c.path || ""}</td></tr>`);
    document.getElementById("stats").innerHTML =
      `<p>${data.http} HTTP, ${data.websocket} WebSocket</p><table><tr><th>proto</th>` +
      `<th>client</th><th>server</th><th>protocol</th><th>path</th></tr>${rows.join("")}</table>`;
  } catch (err) { /* server restarting */ }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""


def create_app() -> App:
    app = App()

    @app.route("/")
    def index(request: Request) -> Response:
        return Response.html(PAGE)

    @app.route("/health")
    def health(request: Request) -> Response:
        return Response("ok\n")

    @app.route("/stats")
    def stats(request: Request) -> Response:
        connections = app.server.connections() if app.server is not None else []
        counts = {"http": 0, "websocket": 0}
        for conn in connections:
            counts[conn["protocol"]] = counts.get(conn["protocol"], 0) + 1
        return Response.json({"connections": connections, **counts})

    @app.websocket("/ws")
    def echo(ws: WebSocket, message: Union[str, bytes]) -> None:
        ws.send(message)

    return app
