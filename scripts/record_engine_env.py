"""Record what a serving engine's environment holds: deploybench-engine.json, written last (its presence means
"complete"); run by the engine's own interpreter.

    record_engine_env.py ENGINE DIST "REQUESTED SPECS" "REMOVED" SECONDS RECORD_PATH
"""

import importlib.metadata as md
import json
import platform
import sys
import time

engine, dist, specs, remove, seconds, record = sys.argv[1:]


def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


left = [name for name in remove.split() if version(name) is not None]
if left:
    sys.exit(f"still installed after uninstalling: {left}")
info = {
    "engine": engine,
    "distribution": dist,
    "version": version(dist),
    "python": platform.python_version(),
    "interpreter": sys.executable,
    "requested": specs.split(),
    "removed": remove.split(),
    "packages": {name: version(name) for name in (dist, "torch", "transformers", "tokenizers")},
    "install_seconds": int(seconds),
    "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
}
if info["version"] is None:
    sys.exit(f"{dist} is not installed in {sys.prefix}")
with open(record, "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
print(json.dumps(info))
