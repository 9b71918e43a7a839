#!/usr/bin/env bash
# Fetches, into .whl/ (git-ignored), the wheels that the device machine's image lacks:
# sembridge-jax's own dependencies beyond the JAX / Flax / Optax / Orbax / PyTorch stack
# it already holds (the versions this repository is tested with). Run here, once, before
# the device check; the device has no network. See bench/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
PACKAGES=(
  ott-jax==0.6.0 jaxopt==0.8.5
  ml-collections==1.1.0
  tensorflow-datasets==4.9.10 array-record==0.8.6 dm-tree==0.1.10 immutabledict==4.3.1
  simple-parsing==0.1.9 docstring-parser==0.18.0 tensorflow-metadata==1.21.0
  termcolor==3.3.0 toml==0.10.2 googleapis-common-protos==1.76.0
  grain==0.2.18 portpicker==1.6.0
  rasterio==1.4.4 affine==3.0.1 click-plugins==1.1.1.2 cligj==0.7.2
  tensorboardX==2.6.5 importlib-resources==7.1.0
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 --platform any -d .whl "${PACKAGES[@]}"
# promise publishes no wheel (pure Python): build one.
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
du -sh .whl
