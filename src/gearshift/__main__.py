"""``python -m gearshift`` is the ``gearshift`` command."""

from __future__ import annotations

from gearshift.cli import main

raise SystemExit(main())
