"""scripts-engine: persona-driven call scripts and dialect voices for retail banks.

The pipeline (DESIGN.md): ``features`` (customers in, a validated columnar batch out) →
``tags`` and ``propensity`` (N x 8 scores) → ``profiles`` (one of the 56 combined persona
profiles, with its reason) → ``render`` (call and chat scripts) → ``voice``/``speech``/
``audio`` (prompts for the dialler). ``scoring.Engine`` ties the first stages together.
Sub-modules are imported on use, so ``import scripts_engine`` stays cheap.
"""

import signal
import sys
from importlib.metadata import PackageNotFoundError, version

# A worker process this package spawns (renderers, speech, campaign chunks) lets Ctrl+C pass:
# a terminal sends SIGINT to the whole process group, and every worker printed a
# KeyboardInterrupt traceback, even one still starting; the service, which gets it too, stops
# its workers itself. Done here, on the child's first import of the package: a spawned child
# runs none of our code before it, and imports the package while multiprocessing prepares it
# (``_inheriting``, the flag multiprocessing itself reads then) to unpickle its task.
_mp = sys.modules.get("multiprocessing.process")
if _mp is not None and getattr(_mp.current_process(), "_inheriting", False):
    signal.signal(signal.SIGINT, signal.SIG_IGN)

try:
    __version__ = version("scripts-engine")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
