"""Every wire format in ``REGISTRY`` is covered: golden cases and a mock upstream route.

Adding an adapter is one module and one line in ``REGISTRY``; these tests make sure that the
line cannot land without golden translation cases (non-stream, stream and error at least)
and without a route in the mock upstream that speaks the format, found through the mock
app's own router at the exact paths the adapter calls.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from gearshift.config import Model, catalog_2024, load
from gearshift.inbound.chat import parse_chat
from gearshift.mock import create_mock_app
from gearshift.providers import REGISTRY

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CONFIG = load(
    None,
    environ={
        "OPENAI_API_KEY": "sk-test-openai-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
        "GEMINI_API_KEY": "gemini-test-key-0123456789",
    },
    base=catalog_2024(),
)
KINDS = sorted(REGISTRY)
# What a case directory must hold for each kind of check.
REQUIRED = {
    "non-stream": ("upstream_response.json", "client_response.json"),
    "stream": ("upstream_stream.sse", "client_stream.sse"),
    "error": ("upstream_error.json", "error.json"),
    "request": ("client_request.json", "upstream_request.json"),
}


def _model_of(kind: str) -> Model:
    for model in CONFIG.models.values():
        if model.provider.kind == kind:
            return model
    raise AssertionError(f"the default catalog has no model of kind {kind!r}")


def test_registry_names_the_three_wire_formats() -> None:
    assert set(REGISTRY) >= {"openai", "anthropic", "gemini"}


def test_golden_directories_are_registered_kinds() -> None:
    for directory in GOLDEN.iterdir():
        if directory.is_dir():
            assert directory.name in REGISTRY, f"tests/golden/{directory.name} is no adapter"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", sorted(REQUIRED))
def test_every_adapter_has_golden_cases(kind: str, what: str) -> None:
    cases = [p for p in (GOLDEN / kind).glob("*") if p.is_dir()]
    covering = [c.name for c in cases if all((c / f).exists() for f in REQUIRED[what])]
    assert covering, f"no {what} golden case under tests/golden/{kind}/"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_mock_upstream_routes_every_adapter(kind: str, stream: bool) -> None:
    """The mock app resolves the path the adapter calls (POST) to a real handler."""
    model = _model_of(kind)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    out = REGISTRY[kind].encode_request(parse_chat(orjson.dumps(body)), model)
    url = urlsplit(out.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    app = create_mock_app()
    match = await app.router.resolve(make_mocked_request("POST", path, app=app))
    assert match.http_exception is None, (
        f"the mock upstream has no POST route for {kind!r} at {url.path} ({match.http_exception!r})"
    )
