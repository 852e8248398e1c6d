"""A stand-in engine server for the lifecycle tests (standard library only).

    python fake_server.py --port PORT [--host H] [--mode MODE] [--children N] [--delay S]

Serves GET /health (200) after `--delay` seconds and spawns `--children` sleeping child processes
(like vLLM's engine core and workers) in its process group. MODE: `ok`; `stubborn` (it and its
children ignore SIGTERM: only SIGKILL ends them); `die` (prints a message and exits 3 before serving);
`eaddrinuse` (prints the error uvicorn prints and exits 1); `never` (never answers /health).
"""

import argparse
import http.server
import signal
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--mode", default="ok")
ap.add_argument("--children", type=int, default=0)
ap.add_argument("--delay", type=float, default=0.0)
args, _engine_args = ap.parse_known_args()  # --model etc. as an engine gets them

if args.mode == "die":
    print("fake engine: loading the model failed: no such architecture 'broken'", flush=True)
    sys.exit(3)
if args.mode == "eaddrinuse":
    print(
        f"ERROR: [Errno 98] error while attempting to bind on address ('{args.host}', {args.port}): "
        "address already in use",
        flush=True,
    )
    sys.exit(1)
stubborn = args.mode == "stubborn"
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child_code = "import signal, time\n"
if stubborn:
    child_code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
child_code += "time.sleep(3600)\n"
children = [subprocess.Popen([sys.executable, "-c", child_code]) for _ in range(args.children)]
print(f"fake engine: children {[c.pid for c in children]}", flush=True)
time.sleep(args.delay)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health" and args.mode != "never":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *a):
        pass


server = http.server.HTTPServer((args.host, args.port), Handler)
print(f"fake engine: serving on {args.host}:{args.port}", flush=True)
server.serve_forever()
