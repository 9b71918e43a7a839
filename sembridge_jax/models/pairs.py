"""The six teacher -> student architecture pairs of the paper (METHOD section 4)."""

from __future__ import annotations

ALL_PAIRS = (("resnet34", "resnet34"), ("mobilenet_v2", "mobilenet_v2"),
             ("shufflenet_v2_x0_5", "shufflenet_v2_x0_5"), ("resnet34", "mobilenet_v2"),
             ("resnet34", "shufflenet_v2_x0_5"), ("mobilenet_v2", "shufflenet_v2_x0_5"))
SHORT = {"resnet34": "ResNet", "mobilenet_v2": "MobileNet", "shufflenet_v2_x0_5": "ShuffleNet"}
PAIR_SELECTIONS = {"all": ALL_PAIRS, "same": ALL_PAIRS[:3], "cross": ALL_PAIRS[3:]}


def pair_name(pair: tuple[str, str]) -> str:
  return f"{SHORT[pair[0]]}->{SHORT[pair[1]]}"


def parse_pairs(spec: str) -> tuple[tuple[str, str], ...]:
  """``all`` | ``same`` | ``cross`` | ``resnet34:mobilenet_v2,mobilenet_v2:...``."""
  if spec in PAIR_SELECTIONS:
    return PAIR_SELECTIONS[spec]
  pairs = []
  for item in str(spec).split(","):
    teacher, sep, student = item.strip().partition(":")
    if not sep or (teacher, student) not in ALL_PAIRS:
      raise ValueError(f"config.benchmark.pairs={spec!r}: {item!r} is not one of the paper's pairs; "
                       f"use all, same, cross or teacher:student from "
                       f"{[f'{t}:{s}' for t, s in ALL_PAIRS]}")
    pairs.append((teacher, student))
  return tuple(pairs)
