from __future__ import annotations

import orjson
import pytest
from conftest import fed

from gearshift import errors
from gearshift.config import catalog_2024, load
from gearshift.inbound.chat import parse_chat
from gearshift.providers import openai
from gearshift.serve.relay import upstream_error

CONFIG = load(None, environ={"OPENAI_API_KEY": "sk-test-abcdef123456"}, base=catalog_2024())
MINI = CONFIG.models["gpt-4o-mini"]
PROVIDER = MINI.provider


def _chat(**extra: object):
    return parse_chat(
        orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra})
    )


def test_encode_rewrites_only_the_model() -> None:
    chat = _chat(temperature=0.3, logit_bias={"50256": -100}, custom={"x": [1, 2.5]})
    out = openai.encode_request(chat, MINI)
    body = orjson.loads(out.body)
    assert body == {**chat.body, "model": "gpt-4o-mini"}
    assert chat.body["model"] == "auto", "the inbound request is not mutated"
    assert out.url == "https://api.openai.com/v1/chat/completions"
    assert out.headers["authorization"] == "Bearer sk-test-abcdef123456"


def test_stream_asks_upstream_for_usage_without_touching_other_options() -> None:
    body = orjson.loads(openai.encode_request(_chat(stream=True), MINI).body)
    assert body["stream_options"] == {"include_usage": True}
    chat = _chat(stream=True, stream_options={"include_obfuscation": False})
    body = orjson.loads(openai.encode_request(chat, MINI).body)
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert "include_usage" not in chat.body["stream_options"]


def test_azure_style_auth_header_and_query() -> None:
    from gearshift.config import decode, resolve

    raw = decode(
        b"""
        use_default_catalog = false
        [[providers]]
        name = "azure"
        kind = "openai"
        base_url = "https://res.openai.azure.com/openai/deployments/gpt4o"
        api_key = "env:AZ"
        auth_header = "api-key"
        query = { "api-version" = "2024-10-21" }
        [[models]]
        name = "gpt-4o"
        provider = "azure"
        tier = "frontier"
        price_in = 2.5
        price_out = 10
        [routing]
        default_model = "gpt-4o"
        """,
        source="t",
    )
    model = resolve(raw, source="t", environ={"AZ": "azkey"}).models["gpt-4o"]
    out = openai.encode_request(_chat(), model)
    assert out.url.endswith("/deployments/gpt4o/chat/completions?api-version=2024-10-21")
    assert out.headers["api-key"] == "azkey"
    assert "authorization" not in out.headers


CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE = (
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
    b'"total_tokens":4}}\n\n'
)
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize("client_wants_usage", [True, False])
def test_pass_through_forwards_bytes_and_handles_the_usage_chunk(
    client_wants_usage: bool,
) -> None:
    options = {"stream_options": {"include_usage": True}} if client_wants_usage else {}
    decoder = openai.stream_decoder(_chat(stream=True, **options), MINI)
    out = [fed(decoder, e) for e in (CHUNK, USAGE, DONE)]
    # Without the client's include_usage, the "usage":null gearshift caused is taken out.
    assert out[0] == (CHUNK if client_wants_usage else CHUNK.replace(b',"usage":null', b""))
    assert out[1] == (USAGE if client_wants_usage else b"")
    assert out[2] == DONE
    assert decoder.state.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert decoder.state.finished


def test_pass_through_flags_malformed_and_error_events() -> None:
    decoder = openai.stream_decoder(_chat(stream=True), MINI)
    assert decoder.feed(b"data: {not json\n\n") == b""
    assert isinstance(decoder.state.error, errors.ProtocolError)

    decoder = openai.stream_decoder(_chat(stream=True), MINI)
    event = b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
    assert decoder.feed(event) == b"", "the relay, not the decoder, sends the error event"
    assert isinstance(decoder.state.error, errors.Unavailable)
    assert decoder.feed(b": keep-alive\n\n") == b": keep-alive\n\n"


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        ({"message": "slow down", "type": "rate_limit_error"}, errors.RateLimited, 429),
        ({"message": "bad", "type": "invalid_request_error"}, errors.Rejected, 400),
        ({"message": "vllm", "type": "BadRequestError", "code": 400}, errors.Rejected, 400),
        ({"message": "busy", "code": "overloaded_error"}, errors.Unavailable, 503),
        ({"message": "boom"}, errors.Unavailable, 502),
    ],
)
def test_an_in_band_error_keeps_its_class(
    error: dict[str, object], kind: type[errors.UpstreamError], status: int
) -> None:
    decoder = openai.stream_decoder(_chat(stream=True), MINI)
    decoder.feed(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
    assert type(decoder.state.error) is kind
    assert decoder.state.error.status == status


@pytest.mark.parametrize(
    ("status", "cls", "client_status", "retryable"),
    [
        (400, errors.Rejected, 400, False),
        (401, errors.CredentialsRejected, 401, True),
        (403, errors.CredentialsRejected, 403, True),
        (404, errors.ModelNotFound, 404, True),  # the catalog's fault unless pinned
        (408, errors.Timeout, 504, True),
        (413, errors.Rejected, 413, False),
        (422, errors.Rejected, 422, False),
        (429, errors.RateLimited, 429, True),
        (500, errors.Unavailable, 502, True),
        (502, errors.Unavailable, 502, True),
        (503, errors.Unavailable, 503, True),
        (504, errors.Timeout, 504, True),
        (529, errors.Unavailable, 503, True),
    ],
)
def test_decode_error_maps_status(
    status: int, cls: type, client_status: int, retryable: bool
) -> None:
    body = orjson.dumps({"error": {"message": "m", "type": "t", "param": "p", "code": "c"}})
    error = openai.decode_error(status, {}, body, PROVIDER)
    assert type(error) is cls
    assert (error.status, error.retryable, error.upstream_status) == (
        client_status,
        retryable,
        status,
    )


def test_decode_error_keeps_code_and_retry_after_and_reads_flat_errors() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "too long",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
    )
    error = openai.decode_error(400, {}, body, PROVIDER)
    assert (error.code, error.param, error.message) == (
        "context_length_exceeded",
        "messages",
        "too long",
    )
    error = openai.decode_error(
        429, {"retry-after-ms": "1500", "retry-after": "9"}, b"{}", PROVIDER
    )
    assert error.retry_after == 1.5
    assert error.headers() == {"retry-after": "2"}
    flat = orjson.dumps(
        {"object": "error", "message": "bad", "type": "BadRequestError", "param": None, "code": 400}
    )
    assert openai.decode_error(400, {}, flat, PROVIDER).message == "bad"
    assert "HTTP 500" in openai.decode_error(500, {}, b"<html>oops</html>", PROVIDER).message


def _shown(error: errors.UpstreamError) -> errors.UpstreamError:
    """The error as the serving path shows it: through its one scrubbing choke point."""
    return upstream_error(error, None, PROVIDER)


def test_configured_key_is_scrubbed_whatever_its_shape() -> None:
    body = orjson.dumps({"error": {"message": "bad key gsk_sk-test-abcdef123456 here"}})
    error = openai.decode_error(422, {}, body, PROVIDER)
    assert error.message == "bad key gsk_sk-test-abcdef123456 here", "the adapter only reports"
    assert "abcdef123456" not in _shown(error).message
    assert errors.scrub("token XYZ-custom-secret!", "XYZ-custom-secret") == "token [redacted]!"


def test_redirects_are_protocol_errors() -> None:
    error = openai.decode_error(307, {"location": "http://elsewhere"}, b"", PROVIDER)
    assert type(error) is errors.ProtocolError
    assert error.status == 502


def test_upstream_auth_errors_never_echo_the_key() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "Incorrect API key provided: sk-test-***3456.",
                "code": "invalid_api_key",
            }
        }
    )
    error = _shown(openai.decode_error(401, {}, body, PROVIDER))
    assert "sk-" not in error.message
    assert "3456" not in error.message
    body = orjson.dumps({"error": {"message": "key sk-proj-abcdefgh1234 is odd"}})
    assert "sk-proj" not in _shown(openai.decode_error(400, {}, body, PROVIDER)).message


def test_decode_response_rejects_non_json() -> None:
    with pytest.raises(errors.ProtocolError):
        openai.decode_response(b'{"id": "x", "choices": [', _chat(), MINI)
    with pytest.raises(errors.ProtocolError):
        openai.decode_response(b'{"id": "x"}', _chat(), MINI)
    body = b'{"choices":[],"usage":{"prompt_tokens":1}}'
    assert openai.decode_response(body, _chat(), MINI).usage == {"prompt_tokens": 1}


def _compat(extra: str) -> object:
    from gearshift.config import decode, resolve

    toml = (
        "[[providers]]\nname = 'local'\nkind = 'openai'\nbase_url = 'http://127.0.0.1:1/v1'\n"
        f"api_key = 'x'\n{extra}\n"
        "[[models]]\nname = 'llama'\nprovider = 'local'\ntier = 'light'\n"
        "price_in = 0\nprice_out = 0\n"
    )
    return resolve(decode(toml.encode(), source="t.toml"), source="t.toml", environ={}).models[
        "llama"
    ]


def test_developer_role_becomes_system_where_the_provider_says_so() -> None:
    messages = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]
    chat = _chat(messages=messages)
    plain = orjson.loads(openai.encode_request(chat, _compat("")).body)  # type: ignore[arg-type]
    assert plain["messages"][0]["role"] == "developer"
    flagged = _compat("developer_as_system = true")
    body = orjson.loads(openai.encode_request(chat, flagged).body)  # type: ignore[arg-type]
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert chat.body["messages"][0]["role"] == "developer", "the inbound request is not mutated"


def test_stream_usage_can_be_turned_off_for_servers_that_reject_it() -> None:
    chat = _chat(stream=True)
    body = orjson.loads(openai.encode_request(chat, _compat("")).body)  # type: ignore[arg-type]
    assert body["stream_options"] == {"include_usage": True}
    off = _compat("stream_usage = false")
    body = orjson.loads(openai.encode_request(chat, off).body)  # type: ignore[arg-type]
    assert "stream_options" not in body


def test_max_tokens_is_sent_under_the_name_the_server_wants() -> None:
    chat = _chat(max_tokens=50)
    body = orjson.loads(openai.encode_request(chat, _compat("")).body)  # type: ignore[arg-type]
    assert body["max_tokens"] == 50
    reasoning = _compat("max_tokens_field = 'max_completion_tokens'")
    body = orjson.loads(openai.encode_request(chat, reasoning).body)  # type: ignore[arg-type]
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body
    old = _compat("max_tokens_field = 'max_tokens'")
    newer = _chat(max_completion_tokens=70)
    body = orjson.loads(openai.encode_request(newer, old).body)  # type: ignore[arg-type]
    assert (body["max_tokens"], "max_completion_tokens" in body) == (70, False)


def test_tool_call_ids_become_nine_alphanumerics_consistently() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_abc-123_long", "type": "function", "function": {"name": "w"}},
                {"id": "ABCdef123", "type": "function", "function": {"name": "w"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc-123_long", "content": "18C"},
        {"role": "tool", "tool_call_id": "ABCdef123", "content": "19C"},
    ]
    model = _compat("tool_call_ids = 'alnum9'")
    body = orjson.loads(openai.encode_request(_chat(messages=messages), model).body)  # type: ignore[arg-type]
    calls = body["messages"][1]["tool_calls"]
    results = [m["tool_call_id"] for m in body["messages"][2:]]
    assert [c["id"] for c in calls] == results, "a call and its result keep one id"
    assert all(len(i) == 9 and i.isalnum() and i.isascii() for i in results)
    assert results[1] == "ABCdef123", "an id of the right shape is kept"
    assert messages[2]["tool_call_id"] == "call_abc-123_long", "the inbound request is untouched"


def test_stream_usage_off_removes_the_clients_stream_options_too() -> None:
    chat = _chat(stream=True, stream_options={"include_usage": True})
    off = _compat("stream_usage = false")
    body = orjson.loads(openai.encode_request(chat, off).body)  # type: ignore[arg-type]
    assert "stream_options" not in body


def test_what_a_compatible_server_cannot_take_is_unsupported_not_sent() -> None:
    from gearshift.errors import Unsupported

    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    web = _chat(messages=[{"role": "user", "content": [image]}])
    inline = _chat(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
                ],
            }
        ]
    )
    ollama = _compat("data_url_images_only = true")
    with pytest.raises(Unsupported):
        openai.encode_request(web, ollama)  # type: ignore[arg-type]
    openai.encode_request(inline, ollama)  # type: ignore[arg-type]
    openai.encode_request(web, _compat(""))  # type: ignore[arg-type]
    groq = _compat("single_choice = true")
    with pytest.raises(Unsupported):
        openai.encode_request(_chat(n=2), groq)  # type: ignore[arg-type]
    openai.encode_request(_chat(n=1), groq)  # type: ignore[arg-type]
