"""gearshift: an OpenAI-compatible LLM routing proxy."""

from __future__ import annotations

__version__ = "0.1.0"
