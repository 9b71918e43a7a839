"""The package's shape: layers import only downward, no import cycles, one training loop,
small modules. Read from the source (every import statement, function-level ones too)."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sembridge_jax"

# Lowest first. A module may import from its own component and from components of lower
# layers only. `analysis` (research) sits above `stages`: the stages reach it only by
# name, through `sembridge_jax.stages.reports`, never through an import statement.
LAYERS = (
    ("sharding", "runs", "workdir", "viz", "comparisons", "compilation_cache"),
    ("data",),
    ("models",),
    ("alignment",),
    ("matching",),
    ("train",),
    ("distill",),
    ("config_base",),
    ("results",),
    ("stages",),
    ("analysis",),
    ("main",),
)
RANK = {component: rank for rank, components in enumerate(LAYERS) for component in components}


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
  return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: dict[str, pathlib.Path]) -> str | None:
  """The longest known module prefix of a dotted name (an imported function resolves to
  its module)."""
  while name and name not in known:
    name = name.rpartition(".")[0]
  return name or None


def import_graph() -> dict[str, set[str]]:
  known = modules()
  graph: dict[str, set[str]] = {name: set() for name in known}
  for name, path in known.items():
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      targets = []
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets = [f"{node.module}.{alias.name}" for alias in node.names]
      for target in targets:
        if target.startswith("sembridge_jax"):
          resolved = resolve(target, known)
          if resolved and resolved != name and resolved != "sembridge_jax":
            graph[name].add(resolved)
  return graph


def component(module: str) -> str:
  return module.split(".")[1]


def test_every_module_belongs_to_a_layer():
  unknown = {component(m) for m in modules() if m != "sembridge_jax"} - set(RANK)
  assert not unknown, f"add these to LAYERS in {__file__}: {sorted(unknown)}"


def test_layers_import_only_downward():
  upward = [f"{a} imports {b}" for a, targets in import_graph().items() for b in targets
            if a != "sembridge_jax" and component(a) != component(b)
            and RANK[component(b)] > RANK[component(a)]]
  assert not upward, "\n".join(upward)


def test_no_import_cycle():
  graph = import_graph()
  state: dict[str, int] = {}
  cycles = []

  def visit(node: str, stack: list[str]) -> None:
    state[node] = 1
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [node])
  assert not cycles, "\n".join(cycles)


def test_the_stages_never_import_research_code():
  offending = [f"{a} imports {b}" for a, targets in import_graph().items() for b in targets
               if a.startswith("sembridge_jax.stages") and b.startswith("sembridge_jax.analysis")]
  assert not offending, offending


def test_the_checker_sees_an_upward_import(tmp_path):
  """The walker resolves `from pkg import module` and function-level imports."""
  source = "def f():\n  from sembridge_jax.stages import reports\n"
  tree = ast.parse(source)
  found = [f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
           for a in n.names]
  assert resolve(found[0], modules()) == "sembridge_jax.stages.reports"
  assert RANK[component("sembridge_jax.stages.reports")] > RANK["train"]


def test_one_training_loop():
  """Only the trainer iterates over training steps; nothing else builds an optimizer step."""
  loops = []
  for name, path in modules().items():
    text = path.read_text()
    if "value_and_grad(" in text or "apply_gradients(" in text:
      loops.append(name)
  assert loops == ["sembridge_jax.train.state", "sembridge_jax.train.trainer"], loops


@pytest.mark.parametrize("name,limit", [("stages", 200), ("", 400)])
def test_modules_are_small(name, limit):
  too_long = {m: len(p.read_text().splitlines()) for m, p in modules().items()
              if m.startswith(f"sembridge_jax.{name}")}
  too_long = {m: n for m, n in too_long.items() if n > limit * 1.05}
  assert not too_long, too_long
