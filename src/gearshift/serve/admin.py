"""The operator's endpoints: ``GET /gearshift/stats`` and the status page (this process's
aggregates, each budgeted key's spend from the shared state, the configuration in force),
``POST /gearshift/reload`` (the admin key) and ``POST /gearshift/feedback`` (with
``[learn]``: the application's verdict on an answer)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gearshift.errors import BadRequest, Forbidden, Unauthorized
from gearshift.observe import stats
from gearshift.serve import body as request_body
from gearshift.serve.app import _digest, _json, _known, _presented_key
from gearshift.serve.appkeys import (
    CURRENT,
    GOVERNOR,
    KEY,
    LIVE,
    ON_RELOADED,
    RELOAD_PATH,
    RELOADER,
    ROUTER,
    SHADOW,
    STATS,
)  # fmt: skip


def add_routes(app: web.Application) -> None:
    app.router.add_get("/gearshift/stats", stats_json)
    app.router.add_get("/gearshift", status_page)
    app.router.add_get("/", status_page)
    app.router.add_post(RELOAD_PATH, reload_config)
    if SHADOW in app:
        app.router.add_post("/gearshift/feedback", feedback)


def _snapshot(app: web.Application) -> dict[str, Any]:
    current = app[CURRENT].live
    per_worker = current.config.metrics_dir is not None
    doc = app[STATS].snapshot(app[ROUTER].breakers.states(), per_worker=per_worker)
    last = app[RELOADER].last
    doc["config"] = {
        "source": current.config.source,
        "generation": current.generation,
        "last_reload": None if last is None else {"trigger": last.trigger, **last.doc()},
    }
    return doc


async def stats_json(request: web.Request) -> web.Response:
    """The aggregates of this process, with each budgeted key's spend this day and month
    read from the shared state (every process's, on Redis)."""
    doc = _snapshot(request.app)
    keys = doc["keys"]
    for key in request[LIVE].config.key_policies.values():
        row = keys.setdefault(key.name, {"requests": 0, "refused": 0, "cost_usd": 0.0,
                                         "savings_usd": 0.0})  # fmt: skip
        if key.budgeted:
            row["budget"] = await request.app[GOVERNOR].spent(key) or "state unavailable"
    return _json(doc)


async def status_page(request: web.Request) -> web.Response:
    extra = ""
    shadow = request.app.get(SHADOW)
    if shadow is not None:  # the outcome store's report (``gearshift report``)
        from gearshift.learn import report

        doc = await shadow.report(request[LIVE].policy.rules)
        extra = report.html_section(doc) if doc is not None else ""
    page = stats.page(_snapshot(request.app), extra)
    return web.Response(text=page, content_type="text/html")


async def reload_config(request: web.Request) -> web.Response:
    """``POST /gearshift/reload`` with the admin key (``server.admin_key``): the
    configuration and the rule table read again, validated, swapped in; 200 with what
    changed, or 422 with why the new one was rejected (the running one stays)."""
    admin = request[LIVE].admin_digest
    if admin is None:
        raise Forbidden(
            "Reloading over HTTP is off: set server.admin_key (or send gearshift SIGHUP).",
            code="reload_disabled",
        )
    if not _known(_digest(_presented_key(request)), (admin,)):
        raise Unauthorized(
            "Incorrect or missing admin key for POST /gearshift/reload.", code="invalid_admin_key"
        )
    outcome = await request.app[RELOADER].reload(f"{RELOAD_PATH} from {request.remote}")
    if not outcome.ok:
        error = BadRequest(
            f"The new configuration was rejected; generation {outcome.generation} stays in "
            f"force: {outcome.reason}",
            status=422,
            code="invalid_config",
        )
        return _json(outcome.doc() | orjson.loads(error.body()), status=422)
    for tell in request.app[ON_RELOADED]:
        tell()
    return _json(outcome.doc())


async def feedback(request: web.Request) -> web.Response:
    """``POST /gearshift/feedback``: the application's verdict on an answer it got, by the
    ``x-request-id`` that answer carried: ``{"request_id", "label": "good" | "bad"}`` or a
    ``score`` from 0 to 1 (0.5 and above: good), and an optional ``note``. Stored beside the
    request when it was recorded (for the same proxy key); it outranks a judge's label."""
    doc = request_body.json_body(await request_body.read_body(request, request[LIVE].config))
    if not isinstance(doc, dict) or not isinstance(doc.get("request_id"), str):
        raise BadRequest(
            "request_id (the x-request-id of the answer) is required, a string.",
            param="request_id", code="missing_required_parameter",
        )  # fmt: skip
    label, score = doc.get("label"), doc.get("score")
    if (
        label not in (None, "good", "bad")
        or (
            score is not None
            and (
                isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1
            )
        )
        or (label is None and score is None)
    ):
        raise BadRequest(
            'Send "label": "good" or "bad", or a "score" from 0 to 1.',
            param="label", code="invalid_value",
        )  # fmt: skip
    note = doc["note"] if isinstance(doc.get("note"), str) else ""
    value = float(score) if score is not None else None
    good = label == "good" if label is not None else (value or 0.0) >= 0.5
    labeled = await request.app[SHADOW].feedback(
        doc["request_id"][:128], request[KEY].name, good,
        value, note[:1000],
    )  # fmt: skip
    return _json({"stored": True, "labeled": labeled})


__all__ = ["add_routes"]
