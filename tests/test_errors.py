"""One error root: every exception class Arbiter defines derives from `ArbiterError`
and carries its own stable code, so a caller (the CLI, a user's service) can catch
them all at once and tell them apart."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from arbiter.dsl.errors import ArbiterError

PACKAGES = ("arbiter.dsl", "arbiter.engine", "arbiter.server")


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for root in PACKAGES:
        package = importlib.import_module(root)
        modules = [root] + [
            info.name
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{root}.")
            if not info.name.endswith("__main__")
        ]
        for name in modules:
            module = importlib.import_module(name)
            for obj in vars(module).values():
                if (
                    inspect.isclass(obj)
                    # Errors, not control flow: a stop signal is a BaseException on
                    # purpose (like KeyboardInterrupt, nothing should catch it).
                    and issubclass(obj, Exception)
                    and obj.__module__ == name
                ):
                    found[f"{name}.{obj.__qualname__}"] = obj
    return found


def test_every_error_arbiter_defines_derives_from_the_root() -> None:
    found = _defined_exceptions()
    assert len(found) >= 15  # the walk really found the error classes
    strays = sorted(name for name, cls in found.items() if not issubclass(cls, ArbiterError))
    assert strays == []


def test_every_error_class_has_its_own_stable_code() -> None:
    by_code: dict[str, list[str]] = {}
    for name, cls in _defined_exceptions().items():
        if cls is ArbiterError:
            continue
        code = cls.__dict__.get("code")
        assert isinstance(code, str) and code, f"{name} has no code of its own"
        by_code.setdefault(code, []).append(name)
    assert {c: names for c, names in by_code.items() if len(names) > 1} == {}
