"""The benchmark scenarios for teams who already use locust (not a gearshift dependency).

    pip install locust
    locust -f bench/locustfile.py --host http://127.0.0.1:8787 --headless -u 32 -r 8 -t 60s

The same weighted tasks as ``bench.load``'s ``mixed`` scenario (simple classification, a
long document with a short ask, hard reasoning, a streaming chat, a tool call), sent with
locust's ``FastHttpUser``. A stream counts as failed unless it ends with ``data: [DONE]``.
"""

from __future__ import annotations

import json

from locust import FastHttpUser, task  # type: ignore[import-not-found]

from bench.load import SCENARIOS, TASKS

HEADERS = {"authorization": "Bearer bench", "content-type": "application/json"}
BODIES = {name: json.dumps(body) for name, body in TASKS.items()}


class GearshiftUser(FastHttpUser):  # type: ignore[misc]
    def _send(self, name: str) -> None:
        stream = bool(TASKS[name].get("stream"))
        with self.client.post(
            "/v1/chat/completions",
            data=BODIES[name],
            headers=HEADERS,
            name=name,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
            elif stream and not resp.text.rstrip().endswith("data: [DONE]"):
                resp.failure("stream did not end with [DONE]")
            else:
                resp.success()

    @task(SCENARIOS["mixed"]["classify"])
    def classify(self) -> None:
        self._send("classify")

    @task(SCENARIOS["mixed"]["long_doc"])
    def long_doc(self) -> None:
        self._send("long_doc")

    @task(SCENARIOS["mixed"]["reasoning"])
    def reasoning(self) -> None:
        self._send("reasoning")

    @task(SCENARIOS["mixed"]["stream_chat"])
    def stream_chat(self) -> None:
        self._send("stream_chat")

    @task(SCENARIOS["mixed"]["tool_call"])
    def tool_call(self) -> None:
        self._send("tool_call")
