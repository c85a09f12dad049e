"""Errors meant for the person running mlrun, not for a stack trace."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class MlrunError(Exception):
    """An error whose message is written for the user; the CLI prints it without a traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, problems: Iterable[str] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message)

    def render(self) -> str:
        """The full text shown to the user: the message, then one line per problem."""
        lines = [str(self)]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


class UsageError(MlrunError):
    """Bad input (a recipe, an override, a command-line argument): exit code 2, nothing written."""

    exit_code = EXIT_BAD_INPUT


class PluginError(MlrunError):
    """A plugin broke a rule (duplicate names, bad hook implementations) or failed to load."""

    exit_code = EXIT_BAD_INPUT


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return " — did you mean 'x'?" for the closest candidate, or an empty string."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not matches:
        # Abbreviations: learning_rate -> lr, weight_decay <- wd.
        matches = [c for c in candidates if _initials(word) == c or _initials(c) == word]
    return f" — did you mean '{matches[0]}'?" if matches else ""


def _initials(name: str) -> str:
    parts = [p for p in name.split("_") if p]
    return "".join(p[0] for p in parts) if len(parts) > 1 else ""
