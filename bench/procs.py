"""Starting the processes a benchmark measures: free loopback ports, readiness, clean stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

import gearshift

GEARSHIFT = [sys.executable, "-m", "gearshift"]
# The seed's 2024 catalog (gpt-4o, Claude 3, Gemini 1.5), an example config: the models
# bench.load's tasks name and the recorded figures were run on (`serve --config` it).
CATALOG_2024 = str(Path(gearshift.__file__).parent / "catalog_2024.toml")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ready(url: str, proc: asyncio.subprocess.Process, status: int = 200) -> None:
    """Poll ``url`` until it answers ``status``; fail at once if the process died."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        while True:
            if proc.returncode is not None:
                raise SystemExit(f"{url}: the process exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status == status:
                        return
            await asyncio.sleep(0.05)  # a poll interval


@contextlib.asynccontextmanager
async def running(
    *commands: tuple[list[str], str, int], env: Mapping[str, str] | None = None
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Start each ``(argv, readiness URL, status)`` in turn, waiting until it is ready; on
    exit SIGTERM them all (newest first) and wait (kill after 10 s)."""
    procs: list[asyncio.subprocess.Process] = []
    try:
        for argv, url, status in commands:
            procs.append(
                await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    env={**os.environ, **(env or {})},
                )
            )
            await ready(url, procs[-1], status)
        yield procs
    finally:
        for proc in reversed(procs):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await proc.wait()
            if proc.returncode is None:
                proc.kill()


Command = tuple[list[str], str, int]  # argv, readiness URL, the status it answers when ready


@dataclass
class Trio:
    """What the overhead benchmarks compare, started in this order by ``running``: the mock
    upstream, ``gearshift serve`` in front of it, and the bare pass-through in front of it."""

    mock_url: str
    gearshift_url: str
    passthrough_url: str
    env: dict[str, str]
    commands: list[Command]


def trio(
    mock_port: int | None = None,
    *,
    mock_args: Sequence[str] = (),
    config: str = CATALOG_2024,
    workers: str = "1",
) -> Trio:
    """Free ports, the environment that points every provider of gearshift at the mock (one
    key for all), and the three commands."""
    mock, gs, pt = mock_port or free_port(), free_port(), free_port()
    mock_url = f"http://127.0.0.1:{mock}"
    env = {
        "OPENAI_API_KEY": "sk-bench", "ANTHROPIC_API_KEY": "sk-bench",
        "GEMINI_API_KEY": "sk-bench",
        "GEARSHIFT_OPENAI_BASE_URL": mock_url + "/v1",
        "GEARSHIFT_ANTHROPIC_BASE_URL": mock_url + "/v1",
        "GEARSHIFT_GEMINI_BASE_URL": mock_url + "/v1beta",
    }  # fmt: skip
    commands: list[Command] = [
        (
            [*GEARSHIFT, "mock-upstream", "--port", str(mock), *mock_args],
            mock_url + "/_mock/config",
            200,
        ),
        (
            [*GEARSHIFT, "serve", "--config", config, "--port", str(gs), "--workers", workers],
            f"http://127.0.0.1:{gs}/readyz",
            200,
        ),
        (
            [sys.executable, "-m", "bench.passthrough", "--port", str(pt), "--upstream", mock_url],
            f"http://127.0.0.1:{pt}/v1/chat/completions",
            405,
        ),
    ]
    return Trio(mock_url, f"http://127.0.0.1:{gs}", f"http://127.0.0.1:{pt}", env, commands)
