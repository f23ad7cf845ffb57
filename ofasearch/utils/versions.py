"""The versions a result was made with, recorded in every results folder and artefact: a run is
reproduced (or explained) only when one knows which ofasearch, torch, timm, ray and optuna made it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["PACKAGES", "package_versions"]

PACKAGES = ("ofasearch", "torch", "timm", "ray", "optuna")


def package_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`PACKAGES` (None when one is not installed), read from
    the package metadata: no import, so torch-free layers can call it."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
