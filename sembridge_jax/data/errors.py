"""The one error type for benchmark files that do not match their `DatasetSpec`."""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

MAX_LISTED_PROBLEMS = 20


class Problem(NamedTuple):
  """One offending path, what it should have been and what it is."""
  path: str
  expected: str
  found: str

  def __str__(self) -> str:
    return f"{self.path}: expected {self.expected}; found {self.found}"


class InvalidBenchmarkError(ValueError):
  """Raised before anything is written when a dataset root is malformed.

  Lists every problem found (up to `MAX_LISTED_PROBLEMS`), each naming the file or folder
  and what was expected, so that a user can fix a whole dataset in one pass.
  """

  def __init__(self, problems: Sequence[Problem], *, context: str = ""):
    self.problems = tuple(problems)
    self.context = context
    listed = "\n".join(f"  - {p}" for p in self.problems[:MAX_LISTED_PROBLEMS])
    more = len(self.problems) - MAX_LISTED_PROBLEMS
    header = f"{context}: " if context else ""
    super().__init__(f"{header}{len(self.problems)} problem(s) with the benchmark files:\n"
                     f"{listed}" + (f"\n  ... and {more} more" if more > 0 else ""))

  def __reduce__(self):
    # Raised in worker processes too (`parallel`): pickle the problems, not the message.
    return functools.partial(InvalidBenchmarkError, context=self.context), (self.problems,)


def single(path: object, expected: str, found: str) -> InvalidBenchmarkError:
  """An `InvalidBenchmarkError` about one path."""
  return InvalidBenchmarkError([Problem(str(path), expected, found)])
