"""The engine's error hierarchy.

Every error the engine raises on bad input is a :class:`ScriptsEngineError` and says what went
wrong and where (file, key, line; or row and field). Classes also inherit the standard
exception a caller would naturally catch (``ValueError``, ``LookupError``), as Jinja and
scikit-learn do. The engine knows nothing of HTTP: ``api/`` maps these classes to status codes.
"""

from __future__ import annotations

from dataclasses import dataclass


class ScriptsEngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class CatalogError(ScriptsEngineError, ValueError):
    """A data file under ``personas/`` or ``voices/`` is broken.

    The message names the file, the key path inside it and, when known, the line.
    """

    def __init__(self, message: str, *, path: str, key: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.key = key
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f", line {self.line}"
        if self.key:
            where += f", key '{self.key}'"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class RowError:
    """One rejected input row: 1-based row number (as a person counts records), field, reason."""

    row: int
    field: str
    error: str

    def __str__(self) -> str:
        return f"row {self.row}, field '{self.field}': {self.error}"


class DataError(ScriptsEngineError, ValueError):
    """An input file or record set cannot be used at all (unreadable, wrong format, no rows)."""


class PostCallFieldError(DataError):
    """A field that is known only after a call was asked for as a scoring input."""


class ModelError(ScriptsEngineError, ValueError):
    """A saved model is missing, altered, or does not match the persona grid."""


class ScorerNotFitted(ModelError):
    """Scoring needs a fitted propensity model and there is none."""


class PersonaNotFound(ScriptsEngineError, LookupError):
    """No persona profile has the requested id."""


class VoiceUnavailable(ScriptsEngineError, LookupError):
    """A voice profile, or the speech engine a profile needs, is missing on this machine."""


class SynthesisError(ScriptsEngineError, RuntimeError):
    """Speech synthesis or audio conversion failed for a prompt (after its retry, in a pool)."""


class ScriptRenderError(ScriptsEngineError, ValueError):
    """A script template could not be rendered: missing variable, sandbox refusal, limit hit.

    ``template`` names the template (its path inside ``personas/templates``, without ``.j2``)
    and ``line`` the template line when Jinja knows it.
    """

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None):
        self.message = message
        self.template = template
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.template is None:
            return self.message
        where = f"{self.template}.j2" + (f", line {self.line}" if self.line else "")
        return f"{where}: {self.message}"


class TemplateLimitExceeded(ScriptRenderError):
    """A template used more output, loop steps or time than a script may (a render bomb)."""


class ScriptComplianceError(ScriptRenderError):
    """A rendered script broke a content rule of ``personas/compliance.yaml``.

    ``findings`` lists every rule broken; the message carries the first few.
    """

    def __init__(self, message: str, *, findings: tuple[object, ...] = (), **kwargs: object):
        self.findings = findings
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class LintError(ScriptsEngineError, ValueError):
    """The template pack (or a file in it) failed lint; ``findings`` lists what and where."""

    def __init__(self, message: str, *, findings: tuple[object, ...] = ()):
        self.findings = findings
        super().__init__(message)
