"""Import the pure rooms with every Django-side module refused: run by tests/test_layers.py.

    python -I tests/pure_import_probe.py '<json: root, modules, allowed, forbidden>'

Run in a fresh interpreter (isolated, no DJANGO_SETTINGS_MODULE), it installs a meta-path
finder in front of all others that refuses the forbidden third-party packages and every product
module outside the pure rooms, imports each pure module, and prints a JSON report: every refused
import with the chain of modules that reached it (recorded even when the importer catches the
ImportError, since a guarded import is still a dependency), and every module that failed to import
for another reason.
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import sys
import traceback
from types import FrameType, ModuleType


class RefusingFinder(importlib.abc.MetaPathFinder):
    """Refuses forbidden imports and remembers who asked for them."""

    def __init__(self, forbidden: set[str], products: set[str], allowed: set[str]) -> None:
        self.forbidden = forbidden
        self.products = products
        self.allowed = allowed
        self.refused: list[dict[str, object]] = []

    def find_spec(self, fullname: str, path: object, target: ModuleType | None = None) -> None:
        top = fullname.partition(".")[0]
        product_outside = top in self.products and fullname not in self.allowed
        if top not in self.forbidden and not product_outside:
            return None  # Let the ordinary finders look for it.
        chain = importers(sys._getframe(1), self.products)
        self.refused.append({"chain": chain, "refused": fullname})
        raise ModuleNotFoundError(f"{fullname} is refused inside a pure room", name=fullname)


def importers(frame: FrameType | None, products: set[str]) -> list[str]:
    """The product modules whose top-level code is running, outermost first."""
    chain = []
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "<module>" and name.partition(".")[0] in products:
            chain.append(name)
        frame = frame.f_back
    return chain[::-1]


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.path.insert(0, config["root"])
    forbidden = set(config["forbidden"])
    already = sorted(name for name in sys.modules if name.partition(".")[0] in forbidden)
    finder = RefusingFinder(forbidden, set(config["products"]), set(config["allowed"]))
    sys.meta_path.insert(0, finder)
    failed = {}
    for module in config["modules"]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name not in {refusal["refused"] for refusal in finder.refused}:
                failed[module] = traceback.format_exc()
        except Exception:
            # Whatever else stops a pure module from importing is reported under its name.
            failed[module] = traceback.format_exc()
    print(json.dumps({"preloaded": already, "refused": finder.refused, "failed": failed}))


if __name__ == "__main__":
    main()
