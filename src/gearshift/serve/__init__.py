"""The serving path: what happens to one request, in the order it happens.

``app`` (handlers, middlewares, ``create_app``) creates the request's ``exchange.Exchange``;
``routing.policy`` plans it; ``router`` runs the plan's attempts through the ``transport``
seam, with ``breaker`` and the injected ``clock``; ``relay`` hands back the whole answer or
the stream and settles its cost (``accounting``); the ``observe`` sinks read the exchange.
``workers`` runs several serving processes on one port.
"""
