"""The formats clients speak to gearshift. Today: OpenAI Chat Completions (``chat``). Each
inbound format parses its request into a ``ChatRequest`` the router plans and runs, and the
relay answers in that same format.
"""
