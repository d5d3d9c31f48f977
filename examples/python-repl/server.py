"""A Python REPL: one process per session key, the session's variables in its memory.

Python's standard library only: the python-repl image is the python image with this file
at /app/server.py, run under policies/python-repl.toml (the python policy's sandbox is
what contains the code it runs). It listens on $PORT (8080) and serves:
  POST /run        the body is Python source, run in the session's namespace; the answer
                   is JSON: {"stdout": ..., "stderr": ..., "error": null or the traceback}
  GET /            a page with a prompt (one session per key: reconnect, the variables stay)
HTTP/1.1 with keep-alive; request bodies by Content-Length or chunked.
"""
import contextlib
import http.server
import io
import json
import os
import traceback

PAGE = """<!doctype html><meta charset=utf-8><title>hangar repl</title>
<style>body{font:15px ui-monospace,monospace;margin:2em}pre{white-space:pre-wrap}</style>
<pre id=out></pre><form id=f>&gt;&gt;&gt; <input id=code size=80 autofocus></form>
<script>
const out = document.getElementById('out'), code = document.getElementById('code');
document.getElementById('f').onsubmit = async (e) => {
  e.preventDefault();
  const src = code.value; code.value = '';
  const r = await (await fetch('run', {method: 'POST', body: src})).json();
  out.textContent += '>>> ' + src + '\\n' + r.stdout + r.stderr + (r.error || '');
};
</script>"""

namespace = {"__name__": "__repl__"}


def run(source):
    stdout, stderr = io.StringIO(), io.StringIO()
    error = None
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            try:
                # An expression's value is printed, as at an interactive prompt.
                value = eval(compile(source, "<session>", "eval"), namespace)
                if value is not None:
                    print(repr(value))
            except SyntaxError:
                exec(compile(source, "<session>", "exec"), namespace)
        except BaseException:
            error = traceback.format_exc()
    return {"stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "error": error}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    # Trailers, if any, then the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size + 2)[:size]
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def answer(self, status, data, content_type, body=True):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self):
        self.answer(200, PAGE.encode(), "text/html; charset=utf-8")

    def do_HEAD(self):
        self.answer(200, PAGE.encode(), "text/html; charset=utf-8", body=False)

    def do_POST(self):
        source = self.body().decode("utf-8", "replace")
        if self.path.split("?")[0] == "/run":
            self.answer(200, json.dumps(run(source)).encode(), "application/json")
        else:
            self.answer(404, b"not found", "text/plain")

    def log_message(self, *args):
        pass


http.server.HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
