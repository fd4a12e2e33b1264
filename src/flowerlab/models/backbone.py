"""Pretrained Keras Applications backbones: where their weights come from, and their input scale.

`weights` (config key `models.<arch>.weights`) is one of
- `"imagenet"`: in the workflow, the `fetch_weights` rule fetches Keras' file into
  resources/weights/ (`flowerlab fetch-weights`) and the training gets that path; called
  directly, Keras downloads the file into `$KERAS_HOME/models` (default `~/.keras`);
- `"none"`: random initialisation (tests, or training from scratch);
- the path of a local `.h5` / `.weights.h5` file saved from the same backbone without its top.
"""

from __future__ import annotations

import logging
import socket
import urllib.error
from collections.abc import Callable
from pathlib import Path

import keras

from flowerlab.errors import ConfigError, DownloadError
from flowerlab.models.registry import HDF5_SIGNATURE, IMAGENET, NO_WEIGHTS

logger = logging.getLogger(__name__)

WEIGHTS_SUFFIXES = (".h5", ".hdf5")

# An application factory such as keras.applications.MobileNetV2, called with
# input_shape=, include_top=False, weights=.
ApplicationFactory = Callable[..., keras.Model]


def weights_key(arch: str) -> str:
    return f"models.{arch}.weights"


def check_weights_file(weights: str, arch: str) -> Path:
    """The local weights file `weights` as a Path, or a ConfigError saying what is wrong."""
    path = Path(weights).expanduser()
    allowed = "imagenet, none, or the path of a .h5 / .weights.h5 file"
    if not path.is_file():
        raise ConfigError(
            f"config key '{weights_key(arch)}': {weights!r} is not an existing file "
            f"(allowed: {allowed})"
        )
    if path.suffix.lower() not in WEIGHTS_SUFFIXES:
        raise ConfigError(
            f"config key '{weights_key(arch)}': {weights!r} is not a weights file: its name must "
            f"end in .h5 or .weights.h5 (allowed: {allowed})"
        )
    with open(path, "rb") as handle:
        if handle.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise ConfigError(
                f"config key '{weights_key(arch)}': {weights!r} is not an HDF5 weights file "
                "(it lacks the HDF5 signature; was it saved with model.save_weights(...h5)?)"
            )
    return path


def _is_download_failure(error: BaseException) -> bool:
    """True when `error` (or what it was raised from) is a network failure.

    keras.utils.get_file turns URLError/HTTPError into a bare `Exception` raised inside the
    `except` block, so the network error is on the chain as `__context__`; anything else (a
    bug, a corrupt cache file) must not be reported as "offline".
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(
            current, (urllib.error.URLError, ConnectionError, TimeoutError, socket.gaierror)
        ):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _download_error(arch: str, error: BaseException) -> DownloadError:
    return DownloadError(
        f"could not download the ImageNet weights of the {arch} backbone ({error}); offline? "
        f"Set '{weights_key(arch)}: PATH' to a local .h5 file of the backbone's ImageNet weights "
        "without its top (e.g. mobilenet_v2_1.0_224_no_top.h5), or fetch them once with network "
        "access, or leave the architecture out of 'study'."
    )


def load_backbone(
    factory: ApplicationFactory, *, arch: str, image_size: int, weights: str
) -> keras.Model:
    """`factory(input_shape=(size, size, 3), include_top=False)` with `weights` loaded.

    Every failure that the user can fix is a flowerlab error naming the config key.
    """
    input_shape = (image_size, image_size, 3)
    if weights == NO_WEIGHTS:
        return factory(input_shape=input_shape, include_top=False, weights=None)
    if weights == IMAGENET:
        try:
            return factory(input_shape=input_shape, include_top=False, weights=IMAGENET)
        except Exception as error:  # narrowed by _is_download_failure below, else re-raised
            if _is_download_failure(error):
                raise _download_error(arch, error) from error
            raise
    path = check_weights_file(weights, arch)
    backbone = factory(input_shape=input_shape, include_top=False, weights=None)
    try:
        backbone.load_weights(str(path))
    except (ValueError, OSError, KeyError) as error:
        # ValueError: layer/shape mismatch (weights of another network, or with a top);
        # OSError/KeyError: an HDF5 file without Keras weights in it.
        raise ConfigError(
            f"config key '{weights_key(arch)}': {str(path)!r} does not hold weights of the "
            f"{backbone.name} backbone without its top ({type(error).__name__}: "
            f"{_first_line(error)})"
        ) from error
    logger.info("%s backbone: loaded weights from %s", arch, path)
    return backbone


def _first_line(error: BaseException, limit: int = 300) -> str:
    """Keras lists every layer it could not load; the first line says what went wrong."""
    text = str(error).strip().splitlines()
    return text[0][:limit] if text else type(error).__name__


def unit_to_symmetric_range() -> keras.layers.Layer:
    """[0, 1] images -> [-1, 1], what MobileNetV2 and Xception were trained on.

    Parameter-free and inside the model, so the saved model takes the pipeline's [0, 1]
    images like every other architecture (keras.applications' preprocess_input does
    x / 127.5 - 1 on [0, 255], the same map).
    """
    return keras.layers.Rescaling(scale=2.0, offset=-1.0, name="to_symmetric_range")


def fetch_imagenet_weights(arch: str, image_size: int, dest: str | Path, base_url: str) -> Path:
    """Fetch the ImageNet file Keras publishes for `arch`'s backbone at `image_size` into `dest`.

    keras.utils.get_file does the transfer (progress bar, and Keras' pinned md5 where Keras
    pins one) into a temporary folder beside `dest`; the file must then load into the backbone
    (every layer name and shape), and only then is it renamed to `dest`: a killed or wrong
    download never sits under the output's name. Its sha256 goes into the log (and, through
    the training, into training.json).
    """
    from flowerlab.filesystem import cleanup_on_error, remove_path, sha256_file, temporary_dir_beside
    from flowerlab.models.registry import get_spec

    weights = get_spec(arch).imagenet
    if weights is None:
        raise ConfigError(f"{arch} has no ImageNet weights file (it takes no backbone weights)")
    dest = Path(dest)
    url = weights.url_for(image_size, base_url)
    staging = temporary_dir_beside(dest)
    with cleanup_on_error(staging):
        try:
            fetched = Path(keras.utils.get_file(dest.name, url, file_hash=weights.md5, cache_dir=str(staging),
                                                cache_subdir=""))
        except Exception as error:  # get_file raises a bare Exception around the URL error
            if _is_download_failure(error):
                raise _download_error(arch, error) from error
            raise DownloadError(f"cannot fetch {url}: {_first_line(error)}") from error
        factory = getattr(keras.applications, weights.application)
        load_backbone(factory, arch=arch, image_size=image_size, weights=str(fetched))  # the file fits
        digest = sha256_file(fetched)
        fetched.replace(dest)
    remove_path(staging)
    logger.info("%s: ImageNet weights %s verified (%s), sha256 %s", arch, dest,
                "md5 pinned by Keras" if weights.md5 else "loads into the backbone; Keras pins no hash", digest)
    return dest


def cli(argv: list[str]) -> int:
    """`flowerlab fetch-weights --arch A --image-size N --base-url URL --dest FILE`."""
    import argparse

    from flowerlab.console import configure_logging, positive_int, run_command

    parser = argparse.ArgumentParser(prog=f"flowerlab {argv[0]}",
                                     description="Fetch a backbone's ImageNet weights file and check that it fits.")
    parser.add_argument("--arch", required=True, help="a backbone architecture (mobilenet_v2, xception, ...)")
    parser.add_argument("--image-size", required=True, type=positive_int, help="the model's input size in pixels")
    parser.add_argument("--base-url", required=True, help="Keras' weights store or a mirror (config key weights_url)")
    parser.add_argument("--dest", required=True, type=Path, help="resources/weights/FILE.h5")
    args = parser.parse_args(argv[1:])
    configure_logging()
    return run_command(argv[0], lambda: fetch_imagenet_weights(args.arch, args.image_size, args.dest, args.base_url))
