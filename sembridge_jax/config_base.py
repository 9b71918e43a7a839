"""The base configuration every `configs/*.py` starts from, and its validation.

Configs are Python files with ``get_config() -> ml_collections.ConfigDict`` (big_vision
style): everything a run does is read from the config, and any key can be overridden
on the command line, e.g. ``--config.model.student=mobilenet_v2``.
`validate_config` runs before any work and names the offending key and the allowed
values.
"""

from __future__ import annotations

import ml_collections

# Dataset name -> number of MS channels the models see (METHOD section 5).
DATASET_MS_CHANNELS = {"s2s_eu": 10, "s2s_cn": 14, "m2s_gl": 10}
NORMALIZATIONS = ("per_image_max", "band_stats")
MATCHING_MODES = ("epochs", "step")
DTYPES = ("float32", "bfloat16")


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

  c.data = dataset_config("synthetic")

  c.model = ml_collections.ConfigDict()
  c.model.teacher = "resnet34"
  c.model.student = "resnet34"
  c.model.matcher = "resnet34"    # both matcher encoders
  c.model.dtype = "float32"       # compute dtype; parameters stay float32
  c.model.conv_impl = "auto"      # im2col matmuls on CPU for tiny maps, XLA convs elsewhere

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
  c.distill.temperature = 3.0
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

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 0     # 0: at the end of every epoch only
  c.checkpoint.max_to_keep = 2
  return c


def _require(condition: bool, key: str, allowed, value) -> None:
  if not condition:
    raise ValueError(f"config.{key}={value!r} is invalid; allowed: {allowed}")


def expected_ms_channels(config: ml_collections.ConfigDict) -> int:
  if config.data.name == "synthetic":
    return config.data.synthetic.ms_bands
  return DATASET_MS_CHANNELS[config.data.name]


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ValueError naming the first invalid key; returns the config otherwise."""
  from sembridge_jax import models  # Local: the registry imports Flax.

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
    _require(0.0 <= config.data.synthetic.semantic_overlap <= 1.0, "data.synthetic.semantic_overlap",
             "a number in [0, 1]", config.data.synthetic.semantic_overlap)
  elif not (config.data.manual_dir or config.data.download_url):
    raise ValueError(f"config.data.manual_dir is empty: dataset {config.data.name!r} is built "
                     "from downloaded files; set --config.data.manual_dir=DIR (the folder that "
                     "holds S2S_EU/, S2S_CN/, M2S_GL/) or --config.data.download_url=URL")
  _require(config.matching.mode in MATCHING_MODES, "matching.mode", MATCHING_MODES,
           config.matching.mode)
  _require(config.matcher.rendering_gamma > 0, "matcher.rendering_gamma", "a positive number",
           config.matcher.rendering_gamma)
  _require(0.0 <= config.matcher.rendering_colour_jitter < 1.0, "matcher.rendering_colour_jitter",
           "a number in [0, 1)", config.matcher.rendering_colour_jitter)
  _require(not config.matcher.rendering_random_camera or config.matcher.augment_rendering,
           "matcher.rendering_random_camera",
           "False unless matcher.augment_rendering=True (it is an augmentation)",
           config.matcher.rendering_random_camera)
  for section in ("teacher", "student", "matcher", "distill"):
    for key in ("epochs", "batch_size"):
      value = config[section][key]
      _require(isinstance(value, int) and value > 0, f"{section}.{key}", "a positive integer", value)
  from sembridge_jax.distill import losses  # Local: avoids import cycles at config time.
  _require(config.distill.method in losses.DISTILL_METHODS, "distill.method",
           sorted(losses.DISTILL_METHODS), config.distill.method)
  return config
