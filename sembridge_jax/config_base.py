"""The base configuration every `configs/*.py` starts from, and its validation.

Configs are Python files with ``get_config() -> ml_collections.ConfigDict`` (big_vision
style): everything a run does is read from the config, and any key can be overridden
on the command line, e.g. ``--config.model.student=mobilenet_v2``.
`validate_config` runs before any work and names the offending key and the allowed
values.
"""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections

from sembridge_jax.workdir import Workdir

# Dataset name -> number of MS channels the models see (METHOD section 5).
DATASET_MS_CHANNELS = {"s2s_eu": 10, "s2s_cn": 14, "m2s_gl": 10, "eurosat_asym": 10}
SPLIT_MODES = ("scene", "region")
NORMALIZATIONS = ("per_image_max", "band_stats")
MATCHING_MODES = ("epochs", "step")
DTYPES = ("float32", "bfloat16")


def config_from_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  """``get_config()`` of a ``configs/*.py`` file, loaded by path (config files are not a
  package; a config that varies another loads it with this)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"config file {path} not found")
  spec = importlib.util.spec_from_file_location(f"_sembridge_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def dataset_config(name: str) -> ml_collections.ConfigDict:
  """``config.data`` for dataset ``name``: its channels, RGB size and true-colour bands.

  Keys (see `sembridge_jax.data.benchmark`): name, manual_dir, download_url, data_dir
  ("" -> <workdir>/tfds), split_seed, ms_channels (checked against the dataset),
  normalization, rgb_size, rgb_bands (0-based stored bands rendered as R, G, B),
  augment, synthetic.* (generator parameters).
  """
  from sembridge_jax.data.benchmark import default_data_config  # Local: imports TFDS.
  return default_data_config(name)


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.progress = True
  c.eval_batch_size = 256
  # Test-split evaluation every N epochs (and after the last): each logs the epoch's train
  # and test OA to metrics.jsonl; larger N spends less time evaluating long runs.
  c.eval_every_epochs = 1

  c.data = dataset_config("synthetic")

  c.model = ml_collections.ConfigDict()
  c.model.teacher = "resnet34"
  c.model.student = "resnet34"
  c.model.matcher = "resnet34"    # both matcher encoders
  c.model.dtype = "float32"       # compute dtype; parameters stay float32
  c.model.conv_impl = "auto"      # CPU: oneDNN (or GEMMs) where XLA:CPU convs are slow; XLA elsewhere

  def trainer(epochs: int, batch_size: int, name: str, lr: float, wd: float = 0.0):
    t = ml_collections.ConfigDict()
    t.epochs = epochs
    t.batch_size = batch_size
    t.augment = False
    t.optimizer = ml_collections.ConfigDict(
        {"name": name, "learning_rate": lr, "weight_decay": wd, "schedule": "constant"})
    return t

  c.teacher = trainer(200, 256, "adam", 1e-3)
  c.student = trainer(200, 64, "adam", 1e-3)      # student trained alone (baseline)

  c.matcher = trainer(100, 64, "adamw", 1e-3, 1e-3)
  # The literal METHOD loss (raw LayerNorm outputs, tau = 1, gradients through the soft
  # targets) collapses to identical embeddings; see sembridge_jax/matching/contrastive.py.
  # Literal: --config.matcher.normalize_embeddings=False --config.matcher.temperature=1.0
  #          --config.matcher.detach_targets=False --config.matcher.soft_target_weight=1.0
  c.matcher.normalize_embeddings = True
  c.matcher.soft_target_weight = 0.5     # targets = w * soft + (1 - w) * identity
  c.matcher.temperature = 0.1
  c.matcher.detach_targets = True
  c.matcher.plateau_patience = 2
  c.matcher.plateau_factor = 0.5
  c.matcher.validation_fraction = 0.2
  # The RGB view of each MS image: its true-colour bands over the image's maximum, raised
  # to 1 / rendering_gamma (1: a linear stretch; ~2.2 if the RGB images are camera/sRGB
  # JPEGs). augment_rendering flips it independently of the MS view (so the two views are
  # not pixel-aligned) and jitters brightness/contrast/saturation by +-rendering_colour_jitter.
  # rendering_random_camera (with augment_rendering) first images the linear rendering
  # through a randomly drawn camera (exposure, white balance, crosstalk, haze, blur, tone
  # curve, noise; sembridge_jax.data.augmentation.random_camera) so that what the RGB
  # encoder learns survives the sensor gap; the validation renderings keep rendering_gamma.
  c.matcher.augment_rendering = False
  c.matcher.rendering_gamma = 1.0
  c.matcher.rendering_colour_jitter = 0.1
  c.matcher.rendering_random_camera = False

  c.matching = ml_collections.ConfigDict()
  c.matching.mode = "epochs"              # or "step": re-select inside every jitted step
  c.matching.rematch_epochs = (30, 60, 95, 135)
  c.matching.temperature = 3.0
  c.matching.chunk_size = 4096
  # Initial matching on class-centred embeddings (`matching.centre_per_class`): cosine of
  # each image's departure from its own set's class mean. Off: METHOD's plain cosine.
  c.matching.centre_embeddings = False
  c.matching.gallery_dtype = "float32"

  c.distill = trainer(200, 64, "adam", 1e-3)
  c.distill.method = "kd"
  c.distill.sembridge = True              # False: the method alone (CE + its term, random pairs)
  c.distill.ce_weight = 0.3
  c.distill.kd_weight = 0.4
  c.distill.align_weight = 0.3
  c.distill.temperature = 3.0             # T of "kd" (and SemBridge's KD term); DKD, LSKD and
                                          # CTKD keep their papers' temperatures
  c.distill.use_sfm = True                # False: random same-class teacher pairs
  c.distill.use_attention = True          # CORAL terms (attention tokens + pooled)
  c.distill.use_ot = True
  c.distill.coral_weight = 0.01
  c.distill.ot_weight = 0.1
  c.distill.epsilon = 0.05                # relative to the mean cost
  c.distill.semantic_weight = 1.0
  c.distill.sinkhorn_iterations = 100
  c.distill.sinkhorn_threshold = 1e-4     # L1 marginal error counted as converged
  c.distill.common_dim = 512
  c.distill.num_heads = 8

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.seeds = (0,)

  c.benchmark = ml_collections.ConfigDict()
  c.benchmark.methods = "all"
  c.benchmark.pairs = "same"
  c.benchmark.seeds = 1

  # Research read-outs (modules of sembridge_jax.analysis), called by the stages through
  # sembridge_jax.stages.reports. () turns them all off.
  c.reports = ("synthetic_ground_truth", "kd_target_spread", "distillation_figures",
               "learning_curves")

  # Persistent XLA compilation cache: "auto" (the user cache, or $JAX_COMPILATION_CACHE_DIR),
  # a directory, or "" for none (sembridge_jax.compilation_cache).
  c.compilation_cache_dir = "auto"
  # Training steps per dispatch (a lax.scan over k batches): for accelerators where one
  # step of a small model is shorter than launching it. Same result as 1.
  c.steps_per_dispatch = 1

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 0     # 0: at epoch ends only (see every_epochs)
  # Save at the end of every N-th epoch (and of the last one, and whenever the best
  # evaluation so far was reached). A save costs ~0.1-1 s on a local disk, which dominates
  # short epochs: a 3-step epoch of a small model takes a fraction of that.
  c.checkpoint.every_epochs = 1
  c.checkpoint.max_to_keep = 2
  return c


def _require(condition: bool, key: str, allowed, value) -> None:
  if not condition:
    raise ValueError(f"config.{key}={value!r} is invalid; allowed: {allowed}")


def expected_ms_channels(config: ml_collections.ConfigDict) -> int:
  if config.data.name == "synthetic":
    return config.data.synthetic.ms_bands
  return DATASET_MS_CHANNELS[config.data.name]


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


# Numeric settings: (key, test, what is allowed).
POSITIVE, NON_NEGATIVE = (lambda v: v > 0, "a number > 0"), (lambda v: v >= 0, "a number >= 0")
NUMERIC_RANGES = (
    *((f"{s}.optimizer.learning_rate", *POSITIVE) for s in ("teacher", "student", "matcher", "distill")),
    *((f"{s}.optimizer.weight_decay", *NON_NEGATIVE) for s in ("teacher", "student", "matcher", "distill")),
    *((f"distill.{w}", *NON_NEGATIVE) for w in ("ce_weight", "kd_weight", "align_weight",
                                                 "coral_weight", "ot_weight", "semantic_weight")),
    ("distill.temperature", *POSITIVE), ("matching.temperature", *POSITIVE),
    ("matcher.temperature", *POSITIVE), ("distill.epsilon", *POSITIVE),
    ("distill.sinkhorn_threshold", *POSITIVE),
    ("matcher.soft_target_weight", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("matcher.plateau_factor", lambda v: 0 < v < 1, "a number in (0, 1)"),
    ("matcher.validation_fraction", lambda v: 0 < v < 1, "a number in (0, 1)"),
    ("matcher.rendering_gamma", *POSITIVE),
    ("matcher.rendering_colour_jitter", lambda v: 0 <= v < 1, "a number in [0, 1)"),
)
POSITIVE_INTEGERS = (
    *(f"{s}.{k}" for s in ("teacher", "student", "matcher", "distill") for k in ("epochs", "batch_size")),
    "eval_batch_size", "eval_every_epochs", "steps_per_dispatch", "distill.sinkhorn_iterations", "distill.common_dim", "distill.num_heads",
    "matching.chunk_size", "matcher.plateau_patience", "checkpoint.max_to_keep", "checkpoint.every_epochs", "benchmark.seeds",
)
BATCH_SIZES = ("teacher.batch_size", "student.batch_size", "matcher.batch_size",
               "distill.batch_size", "eval_batch_size")


def _get(config: ml_collections.ConfigDict, key: str):
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int | None = None
                    ) -> ml_collections.ConfigDict:
  """Raises ValueError naming the first invalid key, its value and what is allowed;
  returns the config otherwise. Runs before any work (no dataset is touched).

  ``num_devices`` (default: `jax.device_count()`, every process's devices) is what the
  batch sizes must divide.
  """
  from sembridge_jax import models  # Local: the registry imports Flax.
  from sembridge_jax.distill import methods  # Local: the registry imports Flax.
  from sembridge_jax.models.pairs import parse_pairs
  from sembridge_jax.train import optimizers

  datasets = ("synthetic", *DATASET_MS_CHANNELS)
  _require(config.data.name in datasets, "data.name", list(datasets), config.data.name)
  for key in ("teacher", "student", "matcher"):
    _require(config.model[key] in models.MODEL_NAMES, f"model.{key}", sorted(models.MODEL_NAMES),
             config.model[key])
  _require(config.model.dtype in DTYPES, "model.dtype", DTYPES, config.model.dtype)
  _require(config.model.conv_impl in models.CONV_IMPLS, "model.conv_impl", models.CONV_IMPLS,
           config.model.conv_impl)
  _require(config.data.normalization in NORMALIZATIONS, "data.normalization", NORMALIZATIONS,
           config.data.normalization)
  expected = expected_ms_channels(config)
  _require(config.data.ms_channels == expected, "data.ms_channels",
           f"{expected} (the number of MS bands of dataset {config.data.name!r})",
           config.data.ms_channels)
  bands = tuple(config.data.rgb_bands)
  _require(len(bands) == 3 and all(0 <= b < expected for b in bands), "data.rgb_bands",
           f"three band indices in [0, {expected})", bands)
  _require(config.data.rgb_size >= 32, "data.rgb_size", "an image size >= 32 pixels",
           config.data.rgb_size)
  if config.data.name == "synthetic":
    from sembridge_jax import data as data_lib  # Local: imports TFDS.
    data_lib.synthetic_parameters(config.data)   # Every generator parameter, one line each.
  elif config.data.name == "eurosat_asym":
    pass  # Without a manual_dir it downloads EuroSAT's two archives.
  elif not (config.data.manual_dir or config.data.download_url):
    raise ValueError(f"config.data.manual_dir is empty: dataset {config.data.name!r} is built "
                     "from downloaded files; set --config.data.manual_dir=DIR (the folder that "
                     "holds S2S_EU/, S2S_CN/, M2S_GL/) or --config.data.download_url=URL")
  split_by = config.data.get("split_by", "scene")
  allowed = SPLIT_MODES if config.data.name == "eurosat_asym" else ("scene",)
  _require(split_by in allowed, "data.split_by", f"{list(allowed)} for data.name="
           f"{config.data.name!r}", split_by)
  _require(config.matching.mode in MATCHING_MODES, "matching.mode", MATCHING_MODES,
           config.matching.mode)
  _require(config.matching.gallery_dtype in DTYPES, "matching.gallery_dtype", DTYPES,
           config.matching.gallery_dtype)
  _require(not config.matcher.rendering_random_camera or config.matcher.augment_rendering,
           "matcher.rendering_random_camera",
           "False unless matcher.augment_rendering=True (it is an augmentation)",
           config.matcher.rendering_random_camera)
  for section in ("teacher", "student", "matcher", "distill"):
    optimizer = config[section].optimizer
    _require(optimizer.name in optimizers.OPTIMIZERS, f"{section}.optimizer.name",
             sorted(optimizers.OPTIMIZERS), optimizer.name)
    schedule = optimizer.get("schedule", "constant")
    _require(schedule in optimizers.SCHEDULES, f"{section}.optimizer.schedule",
             sorted(optimizers.SCHEDULES), schedule)
  for key in POSITIVE_INTEGERS:
    value = _get(config, key)
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, key,
             "a positive integer", value)
  for key, test, allowed in NUMERIC_RANGES:
    value = _get(config, key)
    _require(_is_number(value) and test(value), key, allowed, value)
  _require(isinstance(config.get("compilation_cache_dir", ""), str), "compilation_cache_dir",
           '"auto", a directory or "" (none)', config.get("compilation_cache_dir"))
  _require(config.checkpoint.every_steps >= 0, "checkpoint.every_steps",
           "0 (every epoch) or a positive number of steps", config.checkpoint.every_steps)
  seeds = tuple(config.pipeline.seeds)
  _require(len(seeds) > 0 and all(isinstance(s, int) and s >= 0 for s in seeds), "pipeline.seeds",
           "a non-empty tuple of integers >= 0", seeds)
  _require(config.distill.common_dim % config.distill.num_heads == 0, "distill.num_heads",
           f"a divisor of distill.common_dim={config.distill.common_dim}", config.distill.num_heads)
  if config.distill.use_sfm and config.matching.mode == "epochs":
    epochs = tuple(config.matching.rematch_epochs)
    _require(all(isinstance(e, int) and 0 <= e < config.distill.epochs for e in epochs),
             "matching.rematch_epochs",
             f"epoch indices inside the run, in [0, distill.epochs={config.distill.epochs})", epochs)
  for name in config.get("reports", ()):
    _require(importlib.util.find_spec(f"sembridge_jax.analysis.{name}") is not None, "reports",
             "names of modules of sembridge_jax.analysis", name)
  _require(config.distill.method in methods.DISTILL_METHODS, "distill.method",
           sorted(methods.DISTILL_METHODS), config.distill.method)
  for key, parse in (("benchmark.methods", methods.parse_methods),
                     ("benchmark.pairs", parse_pairs)):
    try:
      parse(_get(config, key))
    except ValueError as error:
      raise ValueError(f"config.{key}={_get(config, key)!r} is invalid: {error}") from None
  _check_batch_sizes(config, num_devices)
  return config


def _check_batch_sizes(config: ml_collections.ConfigDict, num_devices: int | None) -> None:
  if num_devices is None:
    import jax  # Local: the device count needs the backend, which flag parsing must precede.
    num_devices = jax.device_count()
  for key in BATCH_SIZES:
    value = _get(config, key)
    _require(value % num_devices == 0, key,
             f"a multiple of the {num_devices} devices (e.g. "
             f"{max(num_devices, value // num_devices * num_devices)})", value)


def load_benchmark(config: ml_collections.ConfigDict, workdir: Workdir | str | pathlib.Path):
  """The configured benchmark, built into ``DIR/tfds`` (or ``data.data_dir``) on first
  use; fills in ``config.data.data_dir``."""
  from sembridge_jax import data as data_lib  # Local: imports TFDS.
  with config.unlocked():
    config.data.data_dir = config.data.data_dir or str(Workdir(pathlib.Path(workdir)).tfds
                                                       if not isinstance(workdir, Workdir)
                                                       else workdir.tfds)
  benchmark = data_lib.load_benchmark(config.data, data_dir=config.data.data_dir)
  if benchmark.ms_channels != config.data.ms_channels:
    raise ValueError(f"config.data.ms_channels={config.data.ms_channels} but dataset "
                     f"{benchmark.name!r} has {benchmark.ms_channels} MS channels")
  return benchmark
