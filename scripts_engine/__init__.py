"""scripts-engine: persona-driven call scripts and dialect voices for retail banks.

The pipeline (DESIGN.md): ``features`` (customers in, a validated columnar batch out) →
``tags`` and ``propensity`` (N x 8 scores) → ``profiles`` (one of the 56 combined persona
profiles, with its reason) → ``render`` (call and chat scripts) → ``voice``/``speech``/
``audio`` (prompts for the dialler). ``scoring.Engine`` ties the first stages together.
Sub-modules are imported on use, so ``import scripts_engine`` stays cheap.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scripts-engine")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
