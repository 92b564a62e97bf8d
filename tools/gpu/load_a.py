"""Profile A by hand: 4 clients send 16-image /classify requests for 6 s; prints the count per status.

python3 tools/gpu/load_a.py http://127.0.0.1:8077/classify
"""

import asyncio
import sys
import tarfile
import time

import httpx

TAR = "../shared/data/products/images-000.tar"


def photos(count: int = 16) -> list[bytes]:
    with tarfile.open(TAR) as tar:
        members = [m for m in tar if m.isfile() and m.name.endswith(".jpg")][:count]
        return [tar.extractfile(m).read() for m in members]  # type: ignore[union-attr]


async def client(http: httpx.AsyncClient, url: str, blobs: list[bytes], stop: float, counts: dict[str, int]) -> None:
    files = [("images", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(blobs)]
    while time.monotonic() < stop:
        try:
            status = str((await http.post(url, files=files, timeout=10)).status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        counts[status] = counts.get(status, 0) + 1


async def main(url: str) -> None:
    blobs, counts = photos(), {}
    async with httpx.AsyncClient() as http:
        stop = time.monotonic() + 6
        await asyncio.gather(*(client(http, url, blobs, stop, counts) for _ in range(4)))
    print(counts)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/classify"))
