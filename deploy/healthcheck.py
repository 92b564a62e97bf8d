"""Container health check: exit 0 only when GET /health/ready answers 200 (used by the image's HEALTHCHECK)."""

import os
import sys
import urllib.request


def main() -> int:
    """Ask the local server whether it is ready; any error or non-200 answer is unhealthy."""
    port = os.environ.get("VITRINE_PORT", "8000")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health/ready")
    keys = [k.strip() for k in os.environ.get("VITRINE_API_KEYS", "").split(",") if k.strip()]
    if keys:  # with VITRINE_PROTECT_OPS_ENDPOINTS the health endpoints need a key too
        request.add_header("X-API-Key", keys[0])
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # URLError, HTTPError (503 while warming up), timeouts
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
