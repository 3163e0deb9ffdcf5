"""Errors in a workflow spec, each naming the file, the line and the field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecIssue:
    message: str
    field: str = ""  # dotted path, e.g. "steps.train.fan_out"
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        where = self.file or "<workflow>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class SpecError(Exception):
    """A workflow that cannot run as written. ``issues`` lists every problem found."""

    def __init__(self, issues: list[SpecIssue] | SpecIssue):
        self.issues = [issues] if isinstance(issues, SpecIssue) else list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))
