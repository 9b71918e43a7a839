r"""A plain-PyTorch reference of the SemBridge distillation step (METHOD sections 3 and 4).

Written from METHOD, independently of the JAX code (no torchvision), to answer two
questions: does the JAX step compute the same thing as a straightforward PyTorch
program (``tests/test_pytorch_reference.py``), and how fast is it by comparison
(``bench/compare_pytorch.py``)?

Models (NCHW; same module tree and attribute names as the Flax NNX models, so that
:func:`port_flax_to_torch` is a name-for-name copy):

* ``resnet34``: 7x7/2 stem conv (64) + BN + ReLU, 3x3/2 max-pool, BasicBlocks
  ``[3, 4, 6, 3]`` of width ``[64, 128, 256, 512]``, global average pool (the
  512-d ``pooled``), Linear(512, K).
* ``mobilenet_v2``: width 1.0, inverted residuals (t, c, n, s) as torchvision,
  last 1x1 conv 512 (not 1280) wide, ReLU6, Dropout(0.2), Linear(512, K).
* ``shufflenet_v2_x0_5``: stages ``[4, 8, 4]`` of width ``[48, 96, 192]`` after
  a 24-wide stem, conv5 1024, Linear(1024, 512) projection (``pooled``), Linear(512, K).

Each returns ``(logits, {"tokens": (B, h*w, D), "pooled": (B, 512)})`` with the
tokens in row-major pixel order, like the JAX models.

Loss (the KD method under SemBridge; the constants of METHOD section 3 and the
project's defaults in :class:`LossSettings`)::

    L     = w_ce CE(s, y) + w_kd KD + w_align ALIGN
    KD    = mean_b KL(softmax(t_b / T) || softmax(s_b / T)),  T = 3, no T^2
    ALIGN = c (CORAL(attn_t, attn_s) + CORAL(pooled_t, pooled_s)) + w_ot OT
    CORAL(X, Y) = mean((Xc^T Xc - Yc^T Yc)^2) / (4 d)      (Xc: X centred over rows)
    OT    = <P*, C>,  C_ij = 1 - cos(s_i, t_j) + lambda_sem [y_i != y_j]

with ``P*`` the entropic optimal plan of ``C`` (uniform marginals, ``eps =
epsilon * mean(C)``) found by log-domain Sinkhorn and held fixed for the gradient
(envelope theorem). The Sinkhorn updates follow OTT-JAX's ``Sinkhorn(lse_mode=True)``
exactly (potentials start at 0; each iteration updates ``g`` and then ``f`` with the
new ``g``; a fixed number of iterations), see :func:`sinkhorn_potentials`.

Step variants (:func:`make_train_step`): ``teacher_grad`` runs the teacher inside the
step with gradients flowing back into it (the authors' code), ``no_grad`` runs it
under ``torch.no_grad``, ``precomputed`` reads the matched teachers' logits, pooled
features and tokens from a gallery tensor (the project's way), and ``compiled`` is
``torch.compile`` of ``precomputed``. ``compute_dtype=torch.bfloat16`` runs the
networks' forward passes under ``torch.autocast`` (parameters, Adam and the loss stay
float32), the counterpart of the JAX models' ``dtype=bfloat16``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Activation = Callable[[torch.Tensor], torch.Tensor] | None
Features = dict[str, torch.Tensor]
ModelOutput = tuple[torch.Tensor, Features]

# ---------------------------------------------------------------------- building blocks


class ConvBN(nn.Module):
  """``activation(BN(conv(x)))``: bias-free conv with padding ``k // 2``, BatchNorm2d
  with PyTorch's ``eps = 1e-5``, ``momentum = 0.1``."""

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
               stride: int = 1, groups: int = 1, activation: Activation):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                          padding=kernel_size // 2, groups=groups, bias=False)
    self.bn = nn.BatchNorm2d(out_channels)
    self.activation = activation

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.bn(self.conv(x))
    return x if self.activation is None else self.activation(x)


class Sequential(nn.Module):
  """Layers applied in order, kept in ``layers`` (the attribute name of ``nnx.Sequential``)."""

  def __init__(self, *layers: nn.Module):
    super().__init__()
    self.layers = nn.ModuleList(layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for layer in self.layers:
      x = layer(x)
    return x


def model_output(logits: torch.Tensor, feature_map: torch.Tensor,
                 pooled: torch.Tensor) -> ModelOutput:
  """``(logits, {"tokens", "pooled"})``; tokens (B, h*w, D) from the (B, D, h, w) map."""
  return logits, {"tokens": feature_map.flatten(2).transpose(1, 2), "pooled": pooled}


def global_average_pool(feature_map: torch.Tensor) -> torch.Tensor:
  """(B, D, h, w) -> (B, D), the mean over pixels."""
  return feature_map.mean(dim=(2, 3))


# ------------------------------------------------------------------------------ ResNet-34


class BasicBlock(nn.Module):
  """``relu(conv2(conv1(x)) + shortcut(x))``, shortcut a 1x1/stride ConvBN where the shape changes."""

  def __init__(self, in_channels: int, out_channels: int, stride: int):
    super().__init__()
    self.conv1 = ConvBN(in_channels, out_channels, 3, stride=stride, activation=F.relu)
    self.conv2 = ConvBN(out_channels, out_channels, 3, activation=None)
    self.downsample = (ConvBN(in_channels, out_channels, 1, stride=stride, activation=None)
                       if stride != 1 or in_channels != out_channels else None)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    shortcut = x if self.downsample is None else self.downsample(x)
    return F.relu(self.conv2(self.conv1(x)) + shortcut)


class ResNet34(nn.Module):
  """ResNet-34: BasicBlocks ``[3, 4, 6, 3]``, widths ``[64, 128, 256, 512]``."""

  STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))

  def __init__(self, *, num_classes: int, in_channels: int):
    super().__init__()
    self.stem = ConvBN(in_channels, 64, 7, stride=2, activation=F.relu)
    self.pool = nn.MaxPool2d(3, stride=2, padding=1)
    blocks, width_in = [], 64
    for stage, (repeats, width) in enumerate(self.STAGES):
      for index in range(repeats):
        blocks.append(BasicBlock(width_in, width, 2 if stage > 0 and index == 0 else 1))
        width_in = width
    self.blocks = nn.ModuleList(blocks)
    self.fc = nn.Linear(512, num_classes)

  def forward(self, images: torch.Tensor) -> ModelOutput:
    x = self.pool(self.stem(images))
    for block in self.blocks:
      x = block(x)
    pooled = global_average_pool(x)
    return model_output(self.fc(pooled), x, pooled)


# ---------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
  """1x1 expand (ReLU6, absent for t = 1) -> 3x3 depthwise (ReLU6) -> 1x1 linear (+ x)."""

  def __init__(self, in_channels: int, out_channels: int, *, stride: int, expansion: int):
    super().__init__()
    hidden = int(round(in_channels * expansion))
    self.expand = (ConvBN(in_channels, hidden, 1, activation=F.relu6)
                   if expansion != 1 else None)
    self.depthwise = ConvBN(hidden, hidden, 3, stride=stride, groups=hidden, activation=F.relu6)
    self.project = ConvBN(hidden, out_channels, 1, activation=None)
    self.use_residual = stride == 1 and in_channels == out_channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = x if self.expand is None else self.expand(x)
    y = self.project(self.depthwise(y))
    return x + y if self.use_residual else y


class MobileNetV2(nn.Module):
  """MobileNetV2, width 1.0, last conv 512 wide, Dropout(0.2) before the classifier."""

  # (expansion t, width c, repeats n, first stride s): torchvision's table.
  SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

  def __init__(self, *, num_classes: int, in_channels: int):
    super().__init__()
    self.stem = ConvBN(in_channels, 32, 3, stride=2, activation=F.relu6)
    blocks, width_in = [], 32
    for expansion, width, repeats, stride in self.SETTINGS:
      for index in range(repeats):
        blocks.append(InvertedResidual(width_in, width, stride=stride if index == 0 else 1,
                                       expansion=expansion))
        width_in = width
    self.blocks = nn.ModuleList(blocks)
    self.last_conv = ConvBN(width_in, 512, 1, activation=F.relu6)
    self.dropout = nn.Dropout(0.2)
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, images: torch.Tensor) -> ModelOutput:
    x = self.stem(images)
    for block in self.blocks:
      x = block(x)
    x = self.last_conv(x)
    pooled = global_average_pool(x)
    return model_output(self.classifier(self.dropout(pooled)), x, pooled)


# ------------------------------------------------------------------------ ShuffleNetV2 x0.5


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
  """NCHW channel shuffle: channel ``g * (C / groups) + i`` moves to ``i * groups + g``."""
  batch, channels, height, width = x.shape
  x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
  return x.reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
  """ShuffleNetV2 unit. Stride 1: ``concat(x1, branch2(x2))`` of the channel halves;
  stride 2: ``concat(branch1(x), branch2(x))``; then a 2-group channel shuffle."""

  def __init__(self, in_channels: int, out_channels: int, stride: int):
    super().__init__()
    half = out_channels // 2
    self.branch1 = Sequential(
        ConvBN(in_channels, in_channels, 3, stride=stride, groups=in_channels, activation=None),
        ConvBN(in_channels, half, 1, activation=F.relu)) if stride > 1 else None
    self.branch2 = Sequential(
        ConvBN(in_channels if stride > 1 else half, half, 1, activation=F.relu),
        ConvBN(half, half, 3, stride=stride, groups=half, activation=None),
        ConvBN(half, half, 1, activation=F.relu))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.branch1 is None:
      kept, transformed = x.chunk(2, dim=1)
      out = torch.cat([kept, self.branch2(transformed)], dim=1)
    else:
      out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
    return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
  """ShuffleNetV2 x0.5 with a Linear(1024, 512) projection before the classifier."""

  STAGES = ((4, 48), (8, 96), (4, 192))

  def __init__(self, *, num_classes: int, in_channels: int):
    super().__init__()
    self.stem = ConvBN(in_channels, 24, 3, stride=2, activation=F.relu)
    self.pool = nn.MaxPool2d(3, stride=2, padding=1)
    units, width_in = [], 24
    for repeats, width in self.STAGES:
      for index in range(repeats):
        units.append(ShuffleUnit(width_in, width, 2 if index == 0 else 1))
        width_in = width
    self.units = nn.ModuleList(units)
    self.conv5 = ConvBN(width_in, 1024, 1, activation=F.relu)
    self.projection = nn.Linear(1024, 512)
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, images: torch.Tensor) -> ModelOutput:
    x = self.pool(self.stem(images))
    for unit in self.units:
      x = unit(x)
    x = self.conv5(x)
    pooled = self.projection(global_average_pool(x))
    return model_output(self.classifier(pooled), x, pooled)


MODELS: dict[str, type[nn.Module]] = {"resnet34": ResNet34, "mobilenet_v2": MobileNetV2,
                                      "shufflenet_v2_x0_5": ShuffleNetV2}


def create_model(name: str, *, num_classes: int, in_channels: int) -> nn.Module:
  """The PyTorch twin of ``sembridge_jax.models.create_model(name, ...)``."""
  if name not in MODELS:
    raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}.")
  return MODELS[name](num_classes=num_classes, in_channels=in_channels)


def count_params(module: nn.Module) -> int:
  """Trainable scalars: parameters only (BatchNorm running statistics are buffers)."""
  return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------ alignment head


class FrozenLinear(nn.Module):
  """``x @ Q`` with a fixed (in, out) matrix ``Q``: a buffer, never trained."""

  def __init__(self, in_dim: int, out_dim: int):
    super().__init__()
    self.register_buffer("kernel", torch.linalg.qr(torch.randn(in_dim, out_dim))[0]
                         * math.sqrt(in_dim / out_dim))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x @ self.kernel


def make_adapter(in_dim: int, out_dim: int, *, trainable: bool) -> nn.Module | None:
  """None (identity) for equal widths, else a bias-free Linear or a FrozenLinear."""
  if in_dim == out_dim:
    return None
  return nn.Linear(in_dim, out_dim, bias=False) if trainable else FrozenLinear(in_dim, out_dim)


def apply_adapter(adapter: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
  return x if adapter is None else adapter(x)


class TokenAttention(nn.Module):
  """Query and key projections (no bias) of an ``num_heads``-head self-attention;
  returns the attention each token receives (see :func:`token_attention_weights`)."""

  def __init__(self, dim: int, num_heads: int = 8):
    super().__init__()
    self.num_heads = num_heads
    self.query = nn.Linear(dim, dim, bias=False)
    self.key = nn.Linear(dim, dim, bias=False)

  def forward(self, tokens: torch.Tensor) -> torch.Tensor:
    return token_attention_weights(self.query(tokens), self.key(tokens), self.num_heads)


class AlignmentHead(nn.Module):
  """Adapters to the common width, one TokenAttention per modality.

  As in the JAX head, the teacher-side adapters are frozen projections unless
  ``trainable_teacher_adapter``, the student-side ones learned; equal widths need none.
  """

  def __init__(self, *, teacher_token_dim: int, student_token_dim: int,
               teacher_pooled_dim: int = 512, student_pooled_dim: int = 512,
               common_dim: int = 512, num_heads: int = 8,
               trainable_teacher_adapter: bool = False):
    super().__init__()
    self.teacher_token_adapter = make_adapter(teacher_token_dim, common_dim,
                                              trainable=trainable_teacher_adapter)
    self.student_token_adapter = make_adapter(student_token_dim, common_dim, trainable=True)
    self.teacher_pooled_adapter = make_adapter(teacher_pooled_dim, common_dim,
                                               trainable=trainable_teacher_adapter)
    self.student_pooled_adapter = make_adapter(student_pooled_dim, common_dim, trainable=True)
    self.teacher_attention = TokenAttention(common_dim, num_heads)
    self.student_attention = TokenAttention(common_dim, num_heads)


# -------------------------------------------------------------------------------- losses

_TINY = 1e-12          # norm/division floor of the JAX attention branch
_MIN_EPSILON = 1e-6    # floor of the absolute Sinkhorn epsilon (JAX: sinkhorn._MIN_EPSILON)


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """Weights and constants of the loss; the defaults are METHOD's and the project's."""
  ce_weight: float = 0.3
  kd_weight: float = 0.4
  align_weight: float = 0.3
  temperature: float = 3.0
  coral_weight: float = 0.01
  ot_weight: float = 0.1
  epsilon: float = 0.05           # relative to the mean cost
  semantic_weight: float = 1.0
  use_attention: bool = True
  use_ot: bool = True
  sinkhorn_iterations: int = 100
  sinkhorn_threshold: float = 1e-4

  @classmethod
  def from_step_options(cls, options) -> "LossSettings":
    """The settings of a JAX ``sembridge_jax.distill.step.StepOptions`` (method "kd")."""
    if options.method != "kd":
      raise ValueError(f"the PyTorch reference implements the KD method only; got {options.method!r}")
    align = options.align_kwargs
    return cls(ce_weight=options.weights.ce, kd_weight=options.weights.distill,
               align_weight=options.weights.align, coral_weight=align["coral_weight"],
               ot_weight=align["ot_weight"], epsilon=align["epsilon"],
               semantic_weight=align["semantic_weight"], use_attention=align["use_attention"],
               use_ot=align["use_ot"], sinkhorn_iterations=align["sinkhorn_iterations"],
               sinkhorn_threshold=align["sinkhorn_threshold"], temperature=options.kd_temperature)


def kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
       temperature: float = 3.0) -> torch.Tensor:
  """``mean_b sum_c p_t (log p_t - log p_s)`` with ``p = softmax(z / T)``, no T^2."""
  log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
  log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
  return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


def _squared_frobenius(m: torch.Tensor) -> torch.Tensor:
  return m.square().sum()


def coral(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
  """``||Xc^T Xc - Yc^T Yc||_F^2 / (4 d^3)`` of (B, ...) batches flattened to (B, d).

  For ``d > B`` the exact Gram identity ``||A^T A - B^T B||^2 = ||A A^T||^2 -
  2 ||A B^T||^2 + ||B B^T||^2`` avoids the d x d covariances (as the JAX code does).
  """
  x, y = x.flatten(1), y.flatten(1)
  n, d = x.shape
  xc, yc = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
  if d <= n:
    squared_norm = _squared_frobenius(xc.T @ xc - yc.T @ yc)
  else:
    squared_norm = (_squared_frobenius(xc @ xc.T) - 2.0 * _squared_frobenius(xc @ yc.T)
                    + _squared_frobenius(yc @ yc.T)).clamp_min(0.0)
  return squared_norm / (d * d) / (4.0 * d)


def grid_side(num_tokens: int) -> int:
  side = math.isqrt(num_tokens)
  if side * side != num_tokens:
    raise ValueError(f"tokens must come from a square grid; got N={num_tokens}.")
  return side


def adaptive_avg_pool_tokens(tokens: torch.Tensor, side: int) -> torch.Tensor:
  """(B, S*S, D) tokens of a square grid -> (B, side*side, D), adaptive average pooling."""
  batch, num_tokens, width = tokens.shape
  in_side = grid_side(num_tokens)
  if in_side == side:
    return tokens
  grid = tokens.transpose(1, 2).reshape(batch, width, in_side, in_side)
  return F.adaptive_avg_pool2d(grid, side).flatten(2).transpose(1, 2)


def token_attention_weights(queries: torch.Tensor, keys: torch.Tensor,
                            num_heads: int) -> torch.Tensor:
  """``w[b, k] = mean_{h, q} softmax_k(<q_h, k_h> / sqrt(D / H))``: (B, N), rows sum to 1."""
  batch, num_tokens, width = queries.shape
  head_dim = width // num_heads
  q = queries.reshape(batch, num_tokens, num_heads, head_dim)
  k = keys.reshape(batch, num_tokens, num_heads, head_dim)
  scores = torch.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(head_dim)
  return scores.softmax(dim=-1).mean(dim=(1, 2))


def cross_modal_weights(w_t: torch.Tensor, w_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
  """``m = w_t[:, :, None] w_s[:, None, :]``; teacher weights ``mean(m, -2) / mean(w_t)``,
  student weights ``mean(m, -1) / mean(w_s)`` (means per sample)."""
  m = w_t[:, :, None] * w_s[:, None, :]
  teacher = m.mean(dim=-2) / w_t.mean(dim=-1, keepdim=True).clamp_min(_TINY)
  student = m.mean(dim=-1) / w_s.mean(dim=-1, keepdim=True).clamp_min(_TINY)
  return teacher, student


def _norm(x: torch.Tensor) -> torch.Tensor:
  return x.square().sum(dim=-1).clamp_min(_TINY).sqrt()


def energy_preserving_reweight(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
  """``weights * tokens`` rescaled per sample so that ``||mean_tokens||^2`` is unchanged."""
  weighted = tokens * weights[:, :, None]
  scale = _norm(tokens.mean(dim=1)) / _norm(weighted.mean(dim=1))
  return weighted * scale[:, None, None]


def attention_coral(head: AlignmentHead, student_tokens: torch.Tensor,
                    teacher_tokens: torch.Tensor) -> torch.Tensor:
  """CORAL of the cross-weighted tokens: both grids pooled to the smaller one, adapted
  to the common width, re-weighted by the other modality's attention, flattened."""
  side = min(grid_side(student_tokens.shape[1]), grid_side(teacher_tokens.shape[1]))
  teacher = apply_adapter(head.teacher_token_adapter, adaptive_avg_pool_tokens(teacher_tokens, side))
  student = apply_adapter(head.student_token_adapter, adaptive_avg_pool_tokens(student_tokens, side))
  teacher_weights, student_weights = cross_modal_weights(head.teacher_attention(teacher),
                                                         head.student_attention(student))
  return coral(energy_preserving_reweight(teacher, teacher_weights),
               energy_preserving_reweight(student, student_weights))


def semantic_cost_matrix(student: torch.Tensor, teacher: torch.Tensor,
                         student_labels: torch.Tensor, teacher_labels: torch.Tensor,
                         semantic_weight: float) -> torch.Tensor:
  """``C[i, j] = 1 - cos(s_i, t_j) + semantic_weight * [y_i != y_j]``."""
  unit = lambda x: x * x.square().sum(-1, keepdim=True).clamp_min(1e-24).rsqrt()
  mismatch = (student_labels[:, None] != teacher_labels[None, :]).to(student.dtype)
  return 1.0 - unit(student) @ unit(teacher).T + semantic_weight * mismatch


def sinkhorn_potentials(cost: torch.Tensor, epsilon: torch.Tensor,
                        iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
  """Log-domain Sinkhorn for uniform marginals ``a = 1/n``, ``b = 1/m``, from f = g = 0.

  Each iteration, in OTT-JAX's order and form (``Geometry.update_potential``)::

      g_j <- eps log b_j - (eps logsumexp_i((f_i + g_j - C_ij) / eps) - g_j)
      f_i <- eps log a_i - (eps logsumexp_j((f_i + g_j - C_ij) / eps) - f_i)

  (the new g already used for f), i.e. block-coordinate ascent on the dual.
  """
  n, m = cost.shape
  f = cost.new_zeros(n)
  g = cost.new_zeros(m)
  log_a, log_b = -math.log(n), -math.log(m)
  for _ in range(iterations):
    g = epsilon * log_b - (epsilon * torch.logsumexp((f[:, None] + g[None, :] - cost) / epsilon,
                                                     dim=0) - g)
    f = epsilon * log_a - (epsilon * torch.logsumexp((f[:, None] + g[None, :] - cost) / epsilon,
                                                     dim=1) - f)
  return f, g


class SinkhornResult(NamedTuple):
  plan: torch.Tensor            # (n, m) P* = exp((f_i + g_j - C_ij) / eps)
  f: torch.Tensor
  g: torch.Tensor
  epsilon: torch.Tensor         # absolute: max(epsilon * mean(C), 1e-6)
  converged: torch.Tensor       # ||P^T 1 - b||_1 < threshold (OTT's error for this problem)
  n_iters: int
  marginal_error: torch.Tensor  # max(||P 1 - a||_1, ||P^T 1 - b||_1)


def sinkhorn_alignment(student: torch.Tensor, teacher: torch.Tensor,
                       student_labels: torch.Tensor, teacher_labels: torch.Tensor,
                       settings: LossSettings) -> tuple[torch.Tensor, SinkhornResult]:
  """``OT = <P*, C>`` with ``P*`` solved on ``C`` detached (gradient through C only)."""
  cost = semantic_cost_matrix(student, teacher, student_labels, teacher_labels,
                              settings.semantic_weight)
  with torch.no_grad():
    fixed = cost.detach()
    epsilon = (settings.epsilon * fixed.mean()).clamp_min(_MIN_EPSILON)
    f, g = sinkhorn_potentials(fixed, epsilon, settings.sinkhorn_iterations)
    plan = torch.exp((f[:, None] + g[None, :] - fixed) / epsilon)
    row_error = (plan.sum(1) - 1.0 / plan.shape[0]).abs().sum()
    column_error = (plan.sum(0) - 1.0 / plan.shape[1]).abs().sum()
  result = SinkhornResult(plan, f, g, epsilon, column_error < settings.sinkhorn_threshold,
                          settings.sinkhorn_iterations, torch.maximum(row_error, column_error))
  return (plan * cost).sum(), result


class TeacherOutputs(NamedTuple):
  """The matched teachers of a batch: logits (B, K), pooled (B, P), tokens (B, N, D), labels (B,)."""
  logits: torch.Tensor
  pooled: torch.Tensor
  tokens: torch.Tensor
  labels: torch.Tensor

  def detach(self) -> "TeacherOutputs":
    return TeacherOutputs(*(x.detach() for x in self))


def alignment_loss(head: AlignmentHead, student_features: Mapping[str, torch.Tensor],
                   teacher: TeacherOutputs, student_labels: torch.Tensor,
                   settings: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
  """``ALIGN = coral_weight (CORAL(attn) + CORAL(pooled)) + ot_weight OT`` and its terms."""
  student = apply_adapter(head.student_pooled_adapter, student_features["pooled"])
  teacher_pooled = apply_adapter(head.teacher_pooled_adapter, teacher.pooled)
  zero = student.new_zeros(())
  terms = {"coral_attention": zero, "coral_pooled": zero, "ot": zero}
  if settings.use_attention:
    terms["coral_attention"] = attention_coral(head, student_features["tokens"], teacher.tokens)
    terms["coral_pooled"] = coral(teacher_pooled, student)
  if settings.use_ot:
    terms["ot"], solution = sinkhorn_alignment(student, teacher_pooled, student_labels,
                                               teacher.labels, settings)
    terms["sinkhorn_converged"] = solution.converged
    terms["sinkhorn_marginal_error"] = solution.marginal_error
  align = (settings.coral_weight * (terms["coral_attention"] + terms["coral_pooled"])
           + settings.ot_weight * terms["ot"])
  return align, terms


def sembridge_loss(student_logits: torch.Tensor, student_features: Mapping[str, torch.Tensor],
                   teacher: TeacherOutputs, labels: torch.Tensor, head: AlignmentHead,
                   settings: LossSettings, *, detach_teacher: bool = True
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
  """``L = w_ce CE + w_kd KD + w_align ALIGN`` and its terms (named as the JAX step's).

  ``detach_teacher=False`` lets gradients flow into the teacher's outputs (the
  authors' fault, for the ``teacher_grad`` timing only).
  """
  if detach_teacher:
    teacher = teacher.detach()
  ce = F.cross_entropy(student_logits, labels)
  distill = kd(student_logits, teacher.logits, settings.temperature)
  align, terms = alignment_loss(head, student_features, teacher, labels, settings)
  loss = settings.ce_weight * ce + settings.kd_weight * distill + settings.align_weight * align
  return loss, {"ce": ce, "distill": distill, "align": align, **terms, "loss": loss}


# --------------------------------------------------------------------------- weight port

# Flax leaf name -> PyTorch name, for leaves whose PyTorch module has no attribute of the
# Flax name (a FrozenLinear keeps its "kernel").
_TORCH_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "mean": "running_mean",
                     "var": "running_var"}


def _torch_layout(value: np.ndarray, torch_name: str) -> np.ndarray:
  """Flax -> PyTorch layout: conv kernels HWIO -> OIHW, dense kernels (in, out) -> (out, in)."""
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)
  if value.ndim == 2 and torch_name.endswith(".weight"):
    return value.T
  return value


def port_flax_to_torch(flax_module, torch_module: nn.Module) -> None:
  """Copies every array variable of a Flax NNX module into its PyTorch twin, in place.

  ``nnx.Param`` -> parameters, ``nnx.BatchStat`` (``mean``, ``var``) -> BatchNorm
  running statistics, the alignment head's frozen projections -> buffers (RNG state
  is skipped), and each BatchNorm's ``epsilon``/``momentum`` (PyTorch's convention on
  both sides: ``running <- (1 - m) running + m batch``). Paths map name for name,
  ``blocks/3/conv1/bn/scale`` -> ``blocks.3.conv1.bn.weight``. Raises ValueError on a
  shape mismatch, a Flax variable without a PyTorch target, or a PyTorch tensor left
  unassigned.
  """
  from flax import nnx  # Only the port needs JAX; the reference itself does not.

  targets = {name: tensor for name, tensor in
             [*torch_module.named_parameters(), *torch_module.named_buffers()]
             if not name.endswith("num_batches_tracked")}
  assigned = set()
  for path, variable in nnx.to_flat_state(nnx.state(flax_module, nnx.Not(nnx.RngState))):
    name = _torch_name(path, targets)
    value = _torch_layout(np.asarray(variable.get_value()), name)
    if tuple(targets[name].shape) != value.shape:
      raise ValueError(f"{name}: PyTorch shape {tuple(targets[name].shape)} != ported {value.shape}")
    with torch.no_grad():
      targets[name].copy_(torch.from_numpy(np.array(value)))
    assigned.add(name)
  if missing := sorted(set(targets) - assigned):
    raise ValueError(f"PyTorch tensors without a Flax source: {missing}")
  _port_batch_norm_settings(flax_module, torch_module)


def _torch_name(path: tuple, targets: Mapping[str, torch.Tensor]) -> str:
  prefix, leaf = [str(key) for key in path[:-1]], str(path[-1])
  for candidate in (leaf, _TORCH_LEAF_NAMES.get(leaf, leaf)):
    name = ".".join([*prefix, candidate])
    if name in targets:
      return name
  raise ValueError(f"Flax variable {'/'.join(map(str, path))} has no PyTorch counterpart.")


def _port_batch_norm_settings(flax_module, torch_module: nn.Module) -> None:
  from flax import nnx
  from sembridge_jax.models.normalization import BatchNorm

  for path, module in nnx.iter_modules(flax_module):
    if isinstance(module, BatchNorm):
      twin = torch_module.get_submodule(".".join(map(str, path)))
      twin.eps, twin.momentum = module.epsilon, module.momentum


# ------------------------------------------------------------------------- train steps

VARIANTS = ("teacher_grad", "no_grad", "precomputed", "compiled")


class StepInputs(NamedTuple):
  """One batch on the device: student images (B, 3, H, W), labels (B,), the matched
  gallery rows (B,) and the matched teachers' MS images (B, C, H, W)."""
  image: torch.Tensor
  label: torch.Tensor
  teacher_row: torch.Tensor
  teacher_image: torch.Tensor


def step_inputs(batch: Mapping[str, np.ndarray], device: torch.device) -> StepInputs:
  """From the JAX bench's NHWC numpy batch (``image``, ``label``, ``teacher_row``,
  ``teacher_image``)."""
  nchw = lambda x: torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
  return StepInputs(nchw(batch["image"]).to(device),
                    torch.from_numpy(np.asarray(batch["label"])).long().to(device),
                    torch.from_numpy(np.asarray(batch["teacher_row"])).long().to(device),
                    nchw(batch["teacher_image"]).to(device))


def gallery_tensors(gallery, device: torch.device) -> TeacherOutputs:
  """A JAX ``Gallery`` (logits, pooled, tokens, labels per MS image) as device tensors."""
  as_tensor = lambda x: torch.from_numpy(np.asarray(x, np.float32)).to(device)
  return TeacherOutputs(as_tensor(gallery.logits), as_tensor(gallery.pooled),
                        as_tensor(gallery.tokens),
                        torch.from_numpy(np.asarray(gallery.labels)).long().to(device))


def run_network(network: nn.Module, images: torch.Tensor,
                compute_dtype: torch.dtype = torch.float32) -> ModelOutput:
  """``network(images)``, its convolutions and matmuls in ``compute_dtype`` (autocast)
  and its outputs float32, as the JAX models with ``dtype=compute_dtype``."""
  if compute_dtype == torch.float32:
    return network(images)
  with torch.autocast(images.device.type, dtype=compute_dtype):
    logits, features = network(images)
  return logits.float(), {name: value.float() for name, value in features.items()}


def teacher_outputs(teacher: nn.Module, inputs: StepInputs,
                    compute_dtype: torch.dtype = torch.float32) -> TeacherOutputs:
  """The teacher network run on the matched MS images (the teachers share the students' labels)."""
  logits, features = run_network(teacher, inputs.teacher_image, compute_dtype)
  return TeacherOutputs(logits, features["pooled"], features["tokens"], inputs.label)


def make_train_step(variant: str, student: nn.Module, head: AlignmentHead, teacher: nn.Module,
                    gallery: TeacherOutputs, settings: LossSettings,
                    learning_rate: float = 1e-3, compute_dtype: torch.dtype = torch.float32
                    ) -> Callable[[StepInputs], torch.Tensor]:
  """``step(inputs) -> loss``: one Adam update of ``student`` and ``head`` (in place).

  ``teacher`` runs in eval mode (running BatchNorm statistics) and is never updated.
  Variants (see the module docstring): ``teacher_grad``, ``no_grad``, ``precomputed``,
  ``compiled`` (``torch.compile`` of the precomputed loss; compiles on its first call).
  ``compute_dtype``: the networks' forward passes (see :func:`run_network`).
  """
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  student.train()
  teacher.eval()
  optimizer = torch.optim.Adam([*student.parameters(), *head.parameters()], lr=learning_rate)

  def loss_of(inputs: StepInputs) -> torch.Tensor:
    if variant == "teacher_grad":
      matched = teacher_outputs(teacher, inputs, compute_dtype)
    elif variant == "no_grad":
      with torch.no_grad():
        matched = teacher_outputs(teacher, inputs, compute_dtype)
    else:
      matched = TeacherOutputs(*(x.index_select(0, inputs.teacher_row) for x in gallery))
    logits, features = run_network(student, inputs.image, compute_dtype)
    return sembridge_loss(logits, features, matched, inputs.label, head, settings,
                          detach_teacher=variant != "teacher_grad")[0]

  compute_loss = torch.compile(loss_of) if variant == "compiled" else loss_of

  def step(inputs: StepInputs) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    if variant == "teacher_grad":  # Gradients reach the teacher; they are never applied.
      teacher.zero_grad(set_to_none=True)
    loss = compute_loss(inputs)
    loss.backward()
    optimizer.step()
    return loss.detach()

  return step


class TorchPair(NamedTuple):
  """The PyTorch side of one teacher -> student pair, with the JAX pair's weights."""
  student: nn.Module
  head: AlignmentHead
  teacher: nn.Module


def port_pair(flax_teacher, flax_distiller, teacher_name: str, student_name: str, *,
              num_classes: int, ms_channels: int, device: torch.device) -> TorchPair:
  """PyTorch twins of a JAX teacher and ``Distiller`` (student + alignment head)."""
  teacher = create_model(teacher_name, num_classes=num_classes, in_channels=ms_channels)
  student = create_model(student_name, num_classes=num_classes, in_channels=3)
  port_flax_to_torch(flax_teacher, teacher)
  port_flax_to_torch(flax_distiller.student, student)
  align = flax_distiller.align
  head = AlignmentHead(
      teacher_token_dim=_in_width(align.teacher_token_adapter, align.common_dim),
      student_token_dim=_in_width(align.student_token_adapter, align.common_dim),
      teacher_pooled_dim=_in_width(align.teacher_pooled_adapter, align.common_dim),
      student_pooled_dim=_in_width(align.student_pooled_adapter, align.common_dim),
      common_dim=align.common_dim, num_heads=align.teacher_attention.num_heads,
      trainable_teacher_adapter=_is_trainable(align.teacher_token_adapter))
  port_flax_to_torch(align, head)
  return TorchPair(student.to(device), head.to(device), teacher.to(device))


def _in_width(adapter, common_dim: int) -> int:
  return common_dim if adapter is None else int(adapter.kernel.shape[0])


def _is_trainable(adapter) -> bool:
  from flax import nnx
  return adapter is not None and isinstance(adapter.kernel, nnx.Param)


def fresh_copy(pair: TorchPair) -> TorchPair:
  """Each timed variant trains its own student and head; the teacher is shared."""
  return TorchPair(copy.deepcopy(pair.student), copy.deepcopy(pair.head), pair.teacher)
