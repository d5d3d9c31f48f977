"""A collaborative document: one process per document key, the text in memory.

Python's standard library only: the collab image is the python image with this file at
/app/server.py (policies/collab.toml runs it). It listens on $PORT (8080) and serves:
  GET /            a page that edits the document live (open it in two tabs)
  GET /doc         the document as text
  GET /whoami      the x-verified-* and x-forwarded-* fields the proxy set, as JSON
  GET /ws          a WebSocket: every text message replaces the document, and every
                   client (the sender too) gets the new text
HTTP/1.1 with keep-alive. Ctrl-C or SIGTERM ends it; the document goes with it.
"""
import asyncio
import base64
import hashlib
import json
import os
import signal
import struct

PAGE = """<!doctype html><meta charset=utf-8><title>hangar collab</title>
<style>body{font:16px system-ui;margin:2em}textarea{width:100%;height:60vh}</style>
<p id=state>connecting…</p><textarea id=doc></textarea>
<script>
const doc = document.getElementById('doc'), state = document.getElementById('state');
const ws = new WebSocket(location.href.replace(/^http/, 'ws').replace(/\\/?$/, '/ws'));
ws.onopen = () => state.textContent = 'live: edits reach every tab of this document';
ws.onclose = () => state.textContent = 'closed (the backend ended?)';
ws.onmessage = (m) => { if (doc.value !== m.data) { const at = doc.selectionStart; doc.value = m.data; doc.selectionStart = doc.selectionEnd = at; } };
doc.oninput = () => ws.send(doc.value);
</script>"""

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
text = ""
clients = set()


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    return method, target, version, fields


def respond(writer, status, body, content_type="text/plain; charset=utf-8"):
    data = body.encode() if isinstance(body, str) else body
    writer.write(
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data
    )


async def frames(reader):
    """Text messages from a WebSocket client (masked frames, fragments joined)."""
    message = b""
    while True:
        first, second = await reader.readexactly(2)
        opcode, length = first & 0x0F, second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        if length > 1 << 20:
            return
        mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
        if opcode == 8:
            return
        if opcode in (0, 1, 2):
            message += payload
            if first & 0x80:
                yield message.decode("utf-8", "replace")
                message = b""


def frame(data, opcode=1):
    length = len(data)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + data


async def websocket(reader, writer, fields):
    global text
    accept = base64.b64encode(hashlib.sha1(fields["sec-websocket-key"].encode() + GUID).digest()).decode()
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
        + f"sec-websocket-accept: {accept}\r\n\r\n".encode()
        + frame(text.encode())
    )
    clients.add(writer)
    try:
        async for message in frames(reader):
            text = message
            for client in list(clients):
                client.write(frame(text.encode()))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        clients.discard(writer)
        if not writer.is_closing():
            writer.write(frame(b"", opcode=8))


async def serve(reader, writer):
    try:
        while True:
            method, target, version, fields = await read_head(reader)
            length = int(fields.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            path = target.split("?", 1)[0].rstrip("/") or "/"
            if path.endswith("/ws") and fields.get("upgrade", "").lower() == "websocket":
                await websocket(reader, writer, fields)
                break
            elif path == "/":
                respond(writer, "200 OK", PAGE, "text/html; charset=utf-8")
            elif path == "/doc":
                respond(writer, "200 OK", text)
            elif path == "/whoami":
                seen = {k: v for k, v in fields.items() if k.startswith(("x-verified-", "x-forwarded-"))}
                seen["target"] = target
                respond(writer, "200 OK", json.dumps(seen, sort_keys=True), "application/json")
            else:
                respond(writer, "404 Not Found", "not found")
            await writer.drain()
            if version == "HTTP/1.0" or fields.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError, KeyError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "0.0.0.0", int(os.environ.get("PORT", "8080")))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


asyncio.run(main())
