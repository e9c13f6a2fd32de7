"""Governance: what a proxy key may spend and how fast (budgets, rate limits), the response
cache, and the state they share across workers and pods (``state``: in-process or Redis)."""
