"""The typed keys of what the app holds (``create_app`` sets them) and of what a request
carries, in a module of their own: the handlers' modules read them without importing the
app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from gearshift.governance.cache import ResponseCache
from gearshift.governance.gate import Spend
from gearshift.governance.governor import Governor
from gearshift.governance.keys import KeyPolicy
from gearshift.governance.state import State
from gearshift.learn.shadow import Shadow
from gearshift.observe import Observation, stats
from gearshift.observe.access import AccessLog
from gearshift.observe.metrics import Metrics
from gearshift.routing.sticky import Sessions
from gearshift.serve import relay
from gearshift.serve.live import Current, Live, Reloader
from gearshift.serve.router import Router
from gearshift.serve.transport import Transport

# The configuration in force and what is built from it (a reload swaps it) ...
CURRENT = web.AppKey("current", Current)
# ... and the one a request read as it arrived (every handler reads this one).
LIVE = web.RequestKey("live", Live)
RELOADER = web.AppKey("reloader", Reloader)
RELOAD_PATH = "/gearshift/reload"  # open to the admin key only (its handler checks it)
ON_RELOADED: web.AppKey[list[Callable[[], None]]] = web.AppKey("on_reloaded")
TRANSPORT = web.AppKey("transport", Transport)
ROUTER = web.AppKey("router", Router)
REQUEST_ID = web.RequestKey("request_id", str)
KEY = web.RequestKey("key", KeyPolicy)  # the proxy key's policy (NO_POLICY without one)
GOVERNOR = web.AppKey("governor", Governor)
SPEND = web.AppKey("spend", Spend)
CACHE = web.AppKey("cache", ResponseCache)  # used with [cache] enabled
STATE: web.AppKey[State] = web.AppKey("state")
SHADOW = web.AppKey("shadow", Shadow)  # set only with [learn] enabled
OBSERVATION = web.AppKey("observation", Observation)
METRICS = web.AppKey("metrics", Metrics)
STATS = web.AppKey("stats", stats.Stats)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
DRAINING = web.AppKey("draining", asyncio.Event)
SESSIONS = web.AppKey("sessions", Sessions)
LARGE_BODIES = web.AppKey("large_bodies", asyncio.Semaphore)
STREAMS: web.AppKey[set[relay.Relay]] = web.AppKey("streams")  # streams being served

__all__ = [
    "ACCESS_LOG",
    "CACHE",
    "CURRENT",
    "DRAINING",
    "GOVERNOR",
    "KEY",
    "LARGE_BODIES",
    "LIVE",
    "METRICS",
    "OBSERVATION",
    "ON_RELOADED",
    "RELOADER",
    "RELOAD_PATH",
    "REQUEST_ID",
    "ROUTER",
    "SESSIONS",
    "SHADOW",
    "SPEND",
    "STATE",
    "STATS",
    "STREAMS",
    "TRANSPORT",
]  # fmt: skip
