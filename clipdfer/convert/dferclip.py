"""Official DFER-CLIP checkpoints -> a saved clipdfer model (``clipdfer convert``): the family's functions
(:mod:`clipdfer.models.dferclip`) composed with the file's provenance, written once.
"""

import dataclasses
import os
from typing import Optional

from .._files import sha256_file
from ..models._loading import write_model_dir
from ..models._pretrained import PretrainedCfg
from ..models.dferclip_official import (
    NotOfficialCheckpointError, check_release_name, convert_official_state_dict, detect_text_type, infer_clip_arch,
    is_official_state_dict, read_official_checkpoint, read_official_release, release_from_filename,
)

__all__ = ["convert_checkpoint", "is_official_state_dict", "convert_official_state_dict", "detect_text_type",
           "read_official_checkpoint", "infer_clip_arch", "release_from_filename", "check_release_name",
           "NotOfficialCheckpointError"]


def convert_checkpoint(path: str, out_dir: str, dataset: Optional[str] = None, fold: Optional[int] = None,
                       pretrained_cfg: Optional[PretrainedCfg] = None) -> str:
    """Convert an official ``.pth`` into ``out_dir`` (``config.json`` + ``model.safetensors``); ``config["source"]``
    records the file's name, sha256 and size.

    Args:
        path: the official file.
        out_dir: the directory to write.
        dataset, fold, pretrained_cfg: as :func:`clipdfer.models.dferclip.read_official_release`.

    Returns:
        ``out_dir``, loadable with ``clipdfer.create_model("local-dir:" + out_dir)``.

    Raises:
        ValueError: as :func:`~clipdfer.models.dferclip.read_official_release`.
        UnsafeCheckpointError: the file names code to run (nothing ran).
    """
    release = read_official_release(path, pretrained_cfg, dataset, fold)
    source = {"file": os.path.basename(path), "sha256": sha256_file(path), "size": os.path.getsize(path)}
    return write_model_dir(out_dir, dataclasses.replace(release, config={**release.config, "source": source}))
