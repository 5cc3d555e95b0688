"""What edr ships besides its code: actor graphs, bundled rules, the default configuration.

A wheel carries them inside the package (``edr/graphs``, ``edr/rules``,
``edr/conf``: pyproject's force-include); a checkout has them at the
repository root (``actors/``, ``rules/``, ``conf/``). :func:`shipped` finds
them the same way in both, the package first, so an installed edr never
reads a checkout by accident and a checkout needs no build step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

PACKAGE: Final = Path(__file__).resolve().parent
#: The repository root when running from a checkout (src/edr/ -> ../..).
CHECKOUT: Final = PACKAGE.parents[1]
#: name -> (inside the package, in a checkout)
_PLACES: Final = {
    "graphs": ("graphs", "actors"),
    "rules": ("rules", "rules"),
    "conf": ("conf", "conf"),
}


def shipped(name: str) -> Path:
    """The directory ``name`` ("graphs", "rules" or "conf") of this installation.

    Raises FileNotFoundError naming both places when neither exists (a
    broken installation).
    """
    inside, beside = _PLACES[name]
    for candidate in (PACKAGE / inside, CHECKOUT / beside):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"edr's {name} are missing: neither {PACKAGE / inside} nor {CHECKOUT / beside} exists")
