"""The emulator's world: which records exist, and what their keywords are (being written)."""

from __future__ import annotations

from jsocmirror import drmstime

DEFAULT_NOW = drmstime.parse_time("2024.07.01_00:00:00_TAI")


class World:
    def __init__(self, registry, state_dir=None, seed: int = 0, now: float | None = None):
        self.registry = registry
        self.state_dir = state_dir
        self.seed = seed
        self.now = DEFAULT_NOW if now is None else now
