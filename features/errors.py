"""User-facing data errors: one message per problem, naming file, row and column (or config key)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in an input: where it is and what to change."""

    message: str
    file: str | None = None
    row: int | None = None
    column: str | None = None
    key: str | None = None  # a dotted key of a YAML config instead of a table's column

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column {self.column!r}")
        if self.key:
            where.append(f"key {self.key!r}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class DataError(Exception):
    """Bad input. Carries one or more `Problem`s; the CLI prints each on its own line and exits 2."""

    def __init__(self, problems: Problem | str | list[Problem]):
        if isinstance(problems, (str, Problem)):
            problems = [Problem(problems) if isinstance(problems, str) else problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class OutOfDomainError(DataError):
    """A coordinate lies outside the grid or the allowed domain."""


class UnitsError(DataError):
    """A variable carries units that cannot be converted to aqcast's internal units."""


class MissingInputError(DataError):
    """A required file, column or variable is missing."""
