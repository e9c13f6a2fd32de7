"""The build's one dynamic part: the routing decision's modules compiled with mypyc.

Everything else is in ``pyproject.toml``. The modules on every request's decision path
(``gearshift.routing``: features, tokens, risk, classify, policy) are compiled to C extensions
with mypyc, about 40 % faster per decision (``bench/RESULTS.md``). Each is also shipped and
kept as plain Python: the fallback when mypyc is missing, when a compile fails (the
extensions are optional) or when ``GEARSHIFT_PURE=1`` is set at install time. Both paths give
the same scores (``tests/unit/test_compiled.py``; CI sets ``GEARSHIFT_REQUIRE_COMPILED=1``
so that a build that fell back to pure fails there).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup

COMPILED = [
    "src/gearshift/routing/features.py",
    "src/gearshift/routing/tokens.py",
    "src/gearshift/routing/risk.py",
    "src/gearshift/routing/classify.py",
    "src/gearshift/routing/policy.py",
]


def ext_modules() -> list[Any]:
    if os.environ.get("GEARSHIFT_PURE", "").strip() not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # no mypyc in the build environment: the pure modules only
        return []
    try:
        extensions = mypycify(COMPILED, opt_level="3")
    except (Exception, SystemExit) as exc:  # e.g. a type error: mypyc refuses the module
        print(f"gearshift: not compiled ({exc!r}); the pure modules are used", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # a failed compile leaves that module pure, not the build
    return extensions


setup(ext_modules=ext_modules())
