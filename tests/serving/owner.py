"""An owner process for the kill tests: starts a server, prints one JSON line, then waits to be killed.

    python owner.py '<ServerConfig fields as JSON>'

Prints {"pgid", "members", "base_url", "startup_s"} once /health answers (or {"error": ...}).
"""

import json
import signal
import sys
import time

from deploybench.engines.serving.server import ServerConfig, ServerProcess

# An owner as a user runs it, whatever started the tests: a test run started in the background by a
# non-interactive shell inherits SIGINT ignored, and the server's handlers rightly leave an ignored signal alone.
signal.signal(signal.SIGINT, signal.default_int_handler)

fields = json.loads(sys.argv[1])
for key in ("command", "engine_args"):
    if fields.get(key) is not None:
        fields[key] = tuple(fields[key])
server = ServerProcess(ServerConfig(**fields))
try:
    info = server.start()
except Exception as error:  # noqa: BLE001
    print(json.dumps({"error": str(error)}), flush=True)
    sys.exit(1)
print(
    json.dumps(
        {"pgid": server.pgid, "members": server.members(), "base_url": info.base_url, "startup_s": info.startup_s}
    ),
    flush=True,
)
while True:
    time.sleep(1)
