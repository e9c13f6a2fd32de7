"""The routing brain, pure and offline-testable: ``features`` (what the classifier reads),
``classify`` (the rule table and its score), ``policy`` (the plan: the tier a request
needs and the cheapest models that meet it), ``tokens`` (counting), and the shipped table
(``rules.toml`` with its lexicons beside it).
"""
