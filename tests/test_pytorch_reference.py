"""The plain-PyTorch reference (bench/pytorch_reference.py) computes what the JAX step does.

* The three architectures have the same trainable parameter counts in both frameworks
  (and METHOD section 4's numbers).
* With the JAX weights ported to PyTorch, the full SemBridge loss of one batch and each
  of its terms agree to ``RTOL`` in float32, with the OT term on and off; so do the
  teacher's outputs (eval mode: the ported running statistics) and the gradients of
  ALIGN with respect to the student's features.
* With the networks in bfloat16 (JAX ``dtype``, PyTorch autocast) the teacher's outputs
  and the loss agree to ``BF16_RTOL``.

The JAX models are built abstractly (``nnx.eval_shape``, fast) and filled with random
values, BatchNorm scale, shift and running statistics included, so that a mistake in
porting any of them shows.
"""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from conftest import REPO, shipped_config  # noqa: E402
from sembridge_jax import config_base, models  # noqa: E402
from sembridge_jax.alignment import AlignmentHead  # noqa: E402
from sembridge_jax.distill import distiller as distiller_lib, step as step_lib  # noqa: E402
from sembridge_jax.distill.gallery import Gallery  # noqa: E402
from sembridge_jax.runs import Run  # noqa: E402

sys.path.insert(0, str(REPO))
from bench import pytorch_reference as reference  # noqa: E402

RTOL = 1e-4            # float32 on both sides
BF16_RTOL = 0.02       # networks in bfloat16 on both sides (8-bit significands)
ATOL = 1e-7            # for terms that are exactly 0 (OT off)
NUM_CLASSES, MS_BANDS, BATCH = 10, 10, 8
TERMS = ("ce", "distill", "coral_attention", "coral_pooled", "ot", "align", "loss")

# METHOD section 4: 10 classes, 3 / 10 input channels.
EXPECTED_PARAMS = {("resnet34", 3): 21_289_802, ("resnet34", 10): 21_311_754,
                   ("mobilenet_v2", 3): 1_981_706, ("mobilenet_v2", 10): 1_983_722,
                   ("shufflenet_v2_x0_5", 3): 871_722, ("shufflenet_v2_x0_5", 10): 873_234}

# (teacher, student, teacher image side, student image side). Together they cover the
# three architectures, the 1024 -> 512 adapters (ShuffleNet), identity adapters, token
# grids of different sizes (2x2 teacher, 4x4 student pooled to 2x2) and dropout.
PAIRS = (("resnet34", "shufflenet_v2_x0_5", 64, 128), ("mobilenet_v2", "mobilenet_v2", 64, 64))


def abstract_model(name: str, in_channels: int, dtype=jnp.float32) -> nnx.Module:
  return nnx.eval_shape(lambda: models.create_model(
      name, num_classes=NUM_CLASSES, in_channels=in_channels, rngs=nnx.Rngs(0), dtype=dtype))


@pytest.mark.parametrize("name,in_channels", sorted(EXPECTED_PARAMS))
def test_parameter_counts_equal(name, in_channels):
  torch_model = reference.create_model(name, num_classes=NUM_CLASSES, in_channels=in_channels)
  assert reference.count_params(torch_model) == models.count_params(
      abstract_model(name, in_channels)) == EXPECTED_PARAMS[name, in_channels]


def random_value(leaf: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
  """Conv kernels N(0, 1 / fan_in), dense kernels U(+-1/sqrt(fan_in)), biases N(0, 0.1^2),
  BatchNorm scale and running variance U(0.5, 1.5), running mean N(0, 0.1^2)."""
  if leaf == "kernel" and len(shape) == 4:
    return rng.normal(0.0, np.sqrt(1.0 / np.prod(shape[:3])), shape)
  if leaf == "kernel":
    return rng.uniform(-1.0, 1.0, shape) / np.sqrt(shape[0])
  if leaf in ("scale", "var"):
    return rng.uniform(0.5, 1.5, shape)
  return rng.normal(0.0, 0.1, shape)


def materialise(module: nnx.Module, seed: int) -> nnx.Module:
  """Gives an abstract (``eval_shape``) module random concrete values, in place."""
  rng = np.random.default_rng(seed)
  state = nnx.state(module)
  for path, variable in nnx.to_flat_state(state):
    value = variable.get_value()
    if isinstance(variable, nnx.RngKey):
      variable.set_value(jax.random.key(seed))
    elif isinstance(variable, nnx.RngCount):
      variable.set_value(jnp.zeros(value.shape, value.dtype))
    else:
      variable.set_value(jnp.asarray(random_value(str(path[-1]), value.shape, rng), value.dtype))
  nnx.update(module, state)
  return module


def without_dropout(jax_model: nnx.Module, torch_model: torch.nn.Module) -> None:
  """Dropout off on both sides (its random masks cannot agree); BatchNorm stays in train mode."""
  jax_model.set_attributes(deterministic=True, raise_if_not_found=False)
  for module in torch_model.modules():
    if isinstance(module, torch.nn.Dropout):
      module.p = 0.0


def nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def step_options(use_ot: bool) -> step_lib.StepOptions:
  config = config_base.validate_config(shipped_config("synthetic"))
  config.distill.use_ot = use_ot
  return distiller_lib.step_options(config, Run("kd", True), steps_per_epoch=1)


def jax_terms(teacher, distiller, images, teacher_images, labels, options_by_ot: dict):
  """Teacher outputs (eval mode) and the JAX step's loss terms, per OT setting (one jit)."""

  def terms(teacher, distiller, images, teacher_images, labels):
    logits, features = teacher(teacher_images)
    gallery = Gallery(ids=jnp.arange(BATCH), labels=labels, logits=logits,
                      pooled=features["pooled"], tokens=features["tokens"])
    batch = {"image": images, "label": labels, "mask": jnp.ones(BATCH, bool),
             "teacher_row": jnp.arange(BATCH)}
    outputs = {"teacher_logits": logits, **{f"teacher_{k}": v for k, v in features.items()}}
    return {use_ot: {**outputs, **step_lib.distillation_loss(
                distiller, batch, gallery, jnp.zeros(()), options)[1]}
            for use_ot, options in options_by_ot.items()}

  results = nnx.jit(terms)(teacher, distiller, *map(jnp.asarray, (images, teacher_images, labels)))
  return jax.tree.map(np.asarray, results)


def torch_terms(pair: reference.TorchPair, images, teacher_images, labels, settings,
                compute_dtype=torch.float32):
  with torch.no_grad():
    logits, features = reference.run_network(pair.teacher, nchw(teacher_images), compute_dtype)
    teacher = reference.TeacherOutputs(logits, features["pooled"], features["tokens"],
                                       torch.from_numpy(labels).long())
    student_logits, student_features = reference.run_network(pair.student, nchw(images),
                                                             compute_dtype)
    _, terms = reference.sembridge_loss(student_logits, student_features, teacher,
                                        teacher.labels, pair.head, settings)
  outputs = {"teacher_logits": logits, **{f"teacher_{k}": v for k, v in features.items()}}
  return {k: v.numpy() for k, v in {**outputs, **terms}.items()}


class PairSetup:
  """One pair's JAX modules (random weights), their PyTorch twins, a batch, and the
  terms of both frameworks on it with the OT term on and off."""

  def __init__(self, teacher_name: str, student_name: str, teacher_side: int, student_side: int):
    self.names = teacher_name, student_name
    self.teacher = materialise(abstract_model(teacher_name, MS_BANDS), seed=1)
    student = materialise(abstract_model(student_name, 3), seed=2)
    head = materialise(nnx.eval_shape(lambda: AlignmentHead(
        teacher_token_dim=self.teacher.token_dim, student_token_dim=student.token_dim,
        rngs=nnx.Rngs(0))), seed=3)
    self.distiller = step_lib.Distiller(student, head, None)
    self.teacher.eval()
    self.torch = reference.port_pair(self.teacher, self.distiller, teacher_name, student_name,
                                     num_classes=NUM_CLASSES, ms_channels=MS_BANDS,
                                     device=torch.device("cpu"))
    self.torch.teacher.eval()
    self.torch.student.train()
    without_dropout(student, self.torch.student)
    rng = np.random.default_rng(0)
    self.images = rng.normal(size=(BATCH, student_side, student_side, 3)).astype(np.float32)
    self.teacher_images = rng.normal(
        size=(BATCH, teacher_side, teacher_side, MS_BANDS)).astype(np.float32)
    self.labels = (np.arange(BATCH) % 4).astype(np.int32)  # pairs of same-class samples

    options_by_ot = {use_ot: step_options(use_ot) for use_ot in (True, False)}
    args = (self.images, self.teacher_images, self.labels)
    self.jax_terms = jax_terms(self.teacher, self.distiller, *args, options_by_ot)
    self.torch_terms = {use_ot: torch_terms(self.torch, *args,
                                            reference.LossSettings.from_step_options(options))
                        for use_ot, options in options_by_ot.items()}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
  """PyTorch's OpenMP threads stall badly when the cores are shared (pytest -n 2): one
  thread makes these small forwards ~10x faster there and changes no result."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=PAIRS, ids=lambda p: f"{p[0]}->{p[1]}")
def pair_setup(request):
  return PairSetup(*request.param)


def assert_close(jax_values: dict, torch_values: dict, keys) -> None:
  """Scalars to ``RTOL``; arrays to ``RTOL`` of their largest magnitude (rounding in a
  deep network is absolute at the scale of the layer, not of each element)."""
  for key in keys:
    desired = jax_values[key]
    atol = max(ATOL, RTOL * float(np.abs(desired).max())) if desired.ndim else ATOL
    np.testing.assert_allclose(torch_values[key], desired, rtol=RTOL, atol=atol, err_msg=key)


@pytest.mark.parametrize("use_ot", [True, False], ids=["ot", "no_ot"])
def test_loss_terms_agree(pair_setup, use_ot):
  jax_values, torch_values = pair_setup.jax_terms[use_ot], pair_setup.torch_terms[use_ot]
  assert_close(jax_values, torch_values, ("teacher_logits", "teacher_pooled", "teacher_tokens"))
  assert_close(jax_values, torch_values, TERMS)
  assert (jax_values["ot"] > 0) == use_ot
  if use_ot:
    assert bool(jax_values["sinkhorn_converged"]) == bool(torch_values["sinkhorn_converged"])
  assert jax_values["coral_attention"] > 0 and jax_values["coral_pooled"] > 0


def test_alignment_gradients_agree(pair_setup):
  """d ALIGN / d(student tokens, pooled): OT through the cost only (the plan held fixed)."""
  rng = np.random.default_rng(1)
  head = pair_setup.distiller.align
  student_tokens = rng.normal(size=(BATCH, 4, pair_setup.distiller.student.token_dim))
  student_pooled = rng.normal(size=(BATCH, 512))
  teacher_tokens = rng.normal(size=(BATCH, 4, pair_setup.teacher.token_dim))
  teacher_pooled = rng.normal(size=(BATCH, 512))
  labels = pair_setup.labels
  kwargs = step_options(True).align_kwargs

  def jax_align(head, tokens, pooled):
    teacher = {"tokens": jnp.asarray(teacher_tokens, jnp.float32),
               "pooled": jnp.asarray(teacher_pooled, jnp.float32)}
    return head({"tokens": tokens, "pooled": pooled}, teacher, jnp.asarray(labels),
                jnp.asarray(labels), **kwargs)[0]

  as_f32 = lambda x: jnp.asarray(x, jnp.float32)
  jax_grads = nnx.jit(jax.grad(jax_align, argnums=(1, 2)))(
      head, as_f32(student_tokens), as_f32(student_pooled))

  tensors = [torch.tensor(x, dtype=torch.float32, requires_grad=True)
             for x in (student_tokens, student_pooled)]
  teacher = reference.TeacherOutputs(torch.zeros(BATCH, NUM_CLASSES),
                                     torch.tensor(teacher_pooled, dtype=torch.float32),
                                     torch.tensor(teacher_tokens, dtype=torch.float32),
                                     torch.from_numpy(labels).long())
  align, _ = reference.alignment_loss(
      pair_setup.torch.head, {"tokens": tensors[0], "pooled": tensors[1]}, teacher,
      torch.from_numpy(labels).long(), reference.LossSettings.from_step_options(step_options(True)))
  align.backward()
  assert_close({"tokens": np.asarray(jax_grads[0]), "pooled": np.asarray(jax_grads[1])},
               {"tokens": tensors[0].grad.numpy(), "pooled": tensors[1].grad.numpy()},
               ("tokens", "pooled"))


def in_bfloat16(pair_setup: "PairSetup") -> tuple:
  """The pair's JAX teacher and distiller with the same weights and bfloat16 networks."""
  teacher_name, student_name = pair_setup.names
  teacher = abstract_model(teacher_name, MS_BANDS, jnp.bfloat16)
  student = abstract_model(student_name, 3, jnp.bfloat16)
  nnx.update(teacher, nnx.state(pair_setup.teacher))
  nnx.update(student, nnx.state(pair_setup.distiller.student))
  student.set_attributes(deterministic=True, raise_if_not_found=False)
  teacher.eval()
  return teacher, step_lib.Distiller(student, pair_setup.distiller.align, None)


def test_bfloat16_networks_agree(pair_setup):
  """``--dtype bfloat16`` times equal computations: the JAX models with ``dtype=bfloat16``
  and the PyTorch ones under ``torch.autocast(bfloat16)`` give the same teacher outputs and
  loss to bfloat16's precision, and both moved away from float32 (the dtype took effect)."""
  options = {True: step_options(True)}
  args = (pair_setup.images, pair_setup.teacher_images, pair_setup.labels)
  jax_values = jax_terms(*in_bfloat16(pair_setup), *args, options)[True]
  torch_values = torch_terms(pair_setup.torch, *args,
                             reference.LossSettings.from_step_options(options[True]),
                             compute_dtype=torch.bfloat16)
  float32 = pair_setup.jax_terms[True]
  for key in ("teacher_logits", "teacher_pooled", "teacher_tokens", "loss"):
    scale = float(np.abs(float32[key]).max())
    difference = lambda a, b: float(np.abs(a[key] - b[key]).max()) / scale
    # Measured: 0.1-0.9% between the frameworks, 0.06-1.4% from float32 on either side.
    assert difference(jax_values, torch_values) < BF16_RTOL, key
    if key == "teacher_logits":   # float32 ports agree to RTOL = 1e-4
      assert difference(jax_values, float32) > 10 * RTOL
      assert difference(torch_values, float32) > 10 * RTOL
