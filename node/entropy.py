"""Where a running node's randomness comes from.

Protocol cores take a ``random.Random`` so simulations can seed them; a real
node hands them one seeded from the OS, so no two nodes (or restarts) share a
sequence. Keys and tokens use ``secrets`` directly, never this.
"""

from __future__ import annotations

import random
import secrets


def random_source() -> random.Random:
    return random.Random(secrets.randbits(128))
