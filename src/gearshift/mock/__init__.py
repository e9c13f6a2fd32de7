"""A loopback fake of the OpenAI, Anthropic and Gemini chat APIs, for demos and tests.

``gearshift mock-upstream`` serves this app so gearshift runs without API keys. One app speaks
three wire protocols, each in its real shapes (JSON answers, SSE streams, error objects):

- OpenAI Chat Completions: ``POST /v1/chat/completions`` (``Authorization: Bearer``), and
  ``GET /v1/models``, ``POST /v1/embeddings`` (small deterministic vectors); the Responses
  API, ``POST /v1/responses`` (whole and streamed, the full
  event sequence), which the GPT-6 models need for tools with reasoning (on chat, ``gpt-6*``
  ids refuse ``max_tokens`` and function tools with an effort other than ``none``, as
  OpenAI does).
- Anthropic Messages: ``POST /v1/messages`` (``x-api-key``; ``anthropic-version`` required),
  streaming named events (``message_start`` ... ``message_stop``).
- Gemini v1beta: ``POST /v1beta/models/{model}:generateContent`` and
  ``:streamGenerateContent`` (SSE with ``?alt=sse``, else one JSON array), with
  ``x-goog-api-key`` or ``?key=``; ``GET /v1beta/models``.

The OpenAI routes also answer without the ``/v1`` prefix, as does ``/messages``. Anthropic and
Gemini requests are validated as strictly as the real APIs (role order, tool call/result
pairing, empty content, unknown fields...), so a buggy translator gets the provider's own 400.
The current reasoning families (Claude 5.x, Gemini 3.x/4) are as strict as their providers
about reasoning: sampling parameters and forced tools refused (Claude), thinking levels each
model accepts (Gemini), and a tool loop whose thinking block or thought signature did not
come back is refused with the provider's 400.

Every API answers ``"Mock answer from {model}: "`` plus the first 12 words of the last user
text (cut to the max-tokens limit), or a call of the requested/first tool with arguments
``{"mock": true}`` when tools are given (but not right after tool results). A model name
containing ``cache`` reports cache tokens (Anthropic: 11 written, 100 read; Gemini: 50
cached) and one containing ``think`` reports 7 Gemini thought tokens.

The model name (or ``MockSettings.fail``) picks a misbehaviour from ``BEHAVIOURS``:
``http-<status>`` errors (in each API's shape: Anthropic turns 503 into 529
``overloaded_error``, Gemini reports 401 as 400 ``API_KEY_INVALID``; ``http-502`` is an HTML
page, as from a proxy in front of the API), ``hang`` (no answer until the client leaves or
the app shuts down), ``withdrawn`` (each API's 404 for a model that does not exist),
``stall`` (the answer starts — half the body, or the first events —
then nothing), ``reset`` (connection dropped before any response), ``reset-body`` (dropped
halfway through the body or after ``cut_after`` events), ``garbage`` (non-JSON body or SSE
event), ``stream-cut`` (connection dropped after ``cut_after`` content events, or before any
response), ``error-first`` (a 200 stream whose only event is an error), ``error-event``
(stream ends with an in-band error and no terminator; non-stream: a 200 whose body is that
error object) and ``slow`` (200 ms extra). ``retry_after_s`` sets the Retry-After of 429 and
503 answers.
Unauthenticated control endpoints under ``/_mock/`` change settings, reset state and list the
recorded requests.

Layout: ``flow`` holds the settings, the per-app state and the request flow the three APIs
share; ``openai``, ``anthropic`` and ``gemini`` each hold one wire format (validation,
answers, streams, error shapes); ``app`` wires the routes and serves the app.
"""

from __future__ import annotations

from gearshift.mock.app import create_mock_app, run_mock, start_mock
from gearshift.mock.flow import BEHAVIOURS, MOCK_STATE, MockSettings, MockState

__all__ = [
    "BEHAVIOURS",
    "MOCK_STATE",
    "MockSettings",
    "MockState",
    "create_mock_app",
    "run_mock",
    "start_mock",
]
