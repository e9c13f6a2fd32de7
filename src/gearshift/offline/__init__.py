"""The offline tools behind ``gearshift route``, ``classify``, ``eval`` and ``calibrate``:
fitting the rule table (``calibrate``), reporting its quality (``evaluate``) and replaying
requests through the policy without sending them (``replay``). Never on the serving path.
"""
