"""Container health check: exit 0 if the service answers GET /livez, else 1.

Used by the images' HEALTHCHECK and docker-compose.yml. Python stdlib only: the slim and CUDA
runtime images carry no curl or wget. Liveness, not readiness: a container that is still
loading or warming its model is alive (the orchestrator's readiness check covers the rest).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = os.environ.get("MLTAG_PORT", "8000")
    url = f"http://127.0.0.1:{port}/livez"
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT_S", 3))):
            return 0
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"unhealthy: GET {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
