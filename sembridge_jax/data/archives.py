"""TensorFlow-free extraction of a downloaded dataset archive (zip / tar[.gz|.bz2|.xz]).

TFDS's own extractor writes through ``tf.io.gfile``; the builder downloads with TFDS's
download manager (caching, checksum registry) and extracts here with the standard
library instead. Extraction goes to a temporary sibling folder that is renamed into
place when complete, so an interrupted extraction is never mistaken for a finished one,
and member paths that would escape the destination are refused.
"""

from __future__ import annotations

import pathlib
import shutil
import tarfile
import uuid
import zipfile

from sembridge_jax.data import errors


def _check_members(archive: pathlib.Path, names: list[str]) -> None:
  for name in names:
    path = pathlib.PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
      raise errors.single(archive, "archive members inside the archive's root",
                          f"member {name!r}")


def extract_archive(archive: str | pathlib.Path, destination: str | pathlib.Path
                    ) -> pathlib.Path:
  """Extracts ``archive`` to ``destination`` (reused if already extracted); returns it."""
  archive, destination = pathlib.Path(archive), pathlib.Path(destination)
  if destination.is_dir():
    return destination
  incomplete = destination.with_name(f"incomplete.{uuid.uuid4().hex}.{destination.name}")
  try:
    if zipfile.is_zipfile(archive):
      with zipfile.ZipFile(archive) as contents:
        _check_members(archive, contents.namelist())
        contents.extractall(incomplete)
    elif tarfile.is_tarfile(archive):
      with tarfile.open(archive) as contents:
        _check_members(archive, contents.getnames())
        # The "data" filter (Python >= 3.11.4) also refuses links and device files.
        contents.extractall(incomplete, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                           else {}))
    else:
      raise errors.single(archive, "a zip or tar archive of a dataset root",
                          "another kind of file")
    incomplete.rename(destination)
  except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
    raise errors.single(archive, "a readable zip or tar archive", f"{type(e).__name__}: {e}"
                        ) from e
  finally:
    shutil.rmtree(incomplete, ignore_errors=True)
  return destination
