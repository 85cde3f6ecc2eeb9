"""The demo's one exception: bad options or a missing optional dependency."""

from __future__ import annotations


class DemoError(Exception):
    """A problem with the demo's inputs or environment, reported without a traceback."""
