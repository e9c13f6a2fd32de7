"""The reference: a bare aiohttp pass-through proxy (parse, forward on a pooled session, copy
back), what the overhead run compares gearshift with.

    python -m bench.passthrough --port 9300 --upstream http://127.0.0.1:9100

It does what any proxy must and nothing more: read the body and parse it once (orjson),
forward it on one pooled ``ClientSession``, copy the answer back — a stream as its bytes,
chunk by chunk. No routing, no translation, no accounting. uvloop when installed.
"""

from __future__ import annotations

import argparse

import aiohttp
import orjson
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    doc = orjson.loads(body)  # what any proxy pays to look at the request
    session = request.app[SESSION]
    async with session.post(
        request.app[UPSTREAM] + "/v1/chat/completions",
        data=body,
        headers={
            "content-type": "application/json",
            "authorization": request.headers.get("authorization", ""),
        },
    ) as upstream:
        if not doc.get("stream"):
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                content_type="application/json",
            )
        response = web.StreamResponse(
            status=upstream.status, headers={"content-type": "text/event-stream"}
        )
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        return response


async def _session(app: web.Application):  # type: ignore[no-untyped-def]
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app[SESSION].close()


def create(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_post("/v1/chat/completions", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    loop = None
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        pass
    web.run_app(
        create(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None,
        loop=loop,
    )  # fmt: skip


if __name__ == "__main__":
    main()
