"""A drift-worker stand-in for the emission cost run: acknowledges every ingest batch.

It accepts ``POST /v1/ingest`` and answers 200 at once, so the benchmark measures what
emission costs the model server (copying, encoding, posting), not drift detection.
``python -m bench.serving.stub_worker --port P``
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

received = {"bytes": 0, "batches": 0}


async def ingest(request: Request) -> JSONResponse:
    body = await request.body()
    received["bytes"] += len(body)
    received["batches"] += 1
    return JSONResponse({"status": "ok"})


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def stats(_request: Request) -> JSONResponse:
    return JSONResponse(received)


app = Starlette(
    routes=[
        Route("/v1/ingest", ingest, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop")


if __name__ == "__main__":
    main()
