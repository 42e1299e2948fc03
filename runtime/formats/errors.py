"""The one error type every reader raises for a file it cannot accept."""

from __future__ import annotations

from pathlib import Path


class FormatError(ValueError):
    """A file (or folder) does not have the layout its reader expects.

    The message names the file, the line for text files, the problem, and what was expected:
    ``training_data/1234.txt line 3: unknown site 'XX'; expected AV, PV, TV, MV or Phc``.
    """

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, expected: str | None = None):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        self.expected = expected
        where = f"{path} line {line}" if line is not None else f"{path}"
        message = f"{where}: {problem}"
        if expected:
            message += f"; expected {expected}"
        super().__init__(message)

    def __reduce__(self):
        # Keeps the error intact across process boundaries (data-loader workers pickle it).
        return _rebuild, (str(self.path), self.problem, self.line, self.expected)


def _rebuild(path: str, problem: str, line: int | None, expected: str | None) -> FormatError:
    return FormatError(path, problem, line=line, expected=expected)
