"""Weight metadata: one frozen ``PretrainedCfg`` per ``arch.tag``, as timm and torchvision (docs/weights.md, "Tags")."""

import collections.abc
import dataclasses
import math
import numbers
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from ..data.io import INTERPOLATIONS
from ..data.sampling import SAMPLINGS

# What a weight file holds: our state dict (or one the family's checkpoint_filter_fn converts), an open_clip / OpenAI
# CLIP checkpoint (the backbone), or told from its keys
CHECKPOINT_FORMATS = ("auto", "clipdfer", "open_clip")

__all__ = ["CHECKPOINT_FORMATS", "PretrainedCfg", "DefaultCfg", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "WEIGHT_STATES",
           "split_model_name_tag", "join_model_name_tag"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# What a model's weights are (``model.weights``), recorded where it is known (the builder from the pretrained cfg or the
# file's own record, the trainer, ``save_pretrained(finetuned=...)``); never guessed.
WEIGHT_STATES = {
    "random": "random weights",
    "pretrained": "pretrained weights not fine-tuned for expressions (e.g. the CLIP initialisation)",
    "finetuned": "fine-tuned weights",
    "loaded": ("weights of unknown training (changed since they were recorded: trained in your own loop, "
               "load_state_dict, or a checkpoint that does not record it): set model.weights = 'finetuned' (or "
               "save_pretrained(..., finetuned=True)) if they are fine-tuned"),
}


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """Where a set of weights lives and what it expects.

    Sources in timm's order: ``state_dict``, ``file``, ``hf_hub_id``, ``url`` (a release file). A cfg with none is a
    registered tag whose weights are not published: ``pretrained=True`` on it raises.
    """
    architecture: str = ""
    tag: str = ""
    hf_hub_id: Optional[str] = None
    hf_hub_filename: str = "model.safetensors"
    hf_hub_revision: Optional[str] = None
    file: Optional[str] = None
    # A release file outside the Hub (Google Drive links through gdown, other http(s) links), and the sha256 it must
    # have when known (None: recorded at the first download, not checked)
    url: Optional[str] = None
    url_sha256: Optional[str] = None
    state_dict: Optional[Dict[str, Any]] = dataclasses.field(default=None, repr=False, compare=False)
    # What the weight file holds, checked when it loads: 'clipdfer' (our state-dict names, or those the family's
    # checkpoint_filter_fn converts), 'open_clip' (an open_clip/OpenAI CLIP checkpoint: the backbone only), or 'auto'
    # (told from its keys).
    checkpoint_format: str = "auto"
    num_classes: Optional[int] = None
    class_names: Optional[Tuple[str, ...]] = None
    num_frames: int = 8
    frame_sampling: str = "segment"
    input_size: Tuple[int, int, int] = (3, 224, 224)
    mean: Tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: Tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: str = "bicubic"
    # timm's data config (timm.data.resolve_data_config reads these): frames are resized to input_size whole (no crop)
    crop_pct: float = 1.0
    crop_mode: str = "squash"
    # Context around a detected face box, a fraction of its longer side on each side (clipdfer predict's crops)
    crop_margin: float = 0.25
    # timm's model metadata: the first convolution (the CLIP patch embedding), a ViT's fixed input size, and the
    # module(s) that map the pre-logits to the logits (filled in from the model when it is built)
    first_conv: Optional[str] = "image_encoder.visual.conv1"
    fixed_input_size: bool = True
    classifier: Optional[Union[str, Tuple[str, ...]]] = None
    finetuned: bool = False
    license: Optional[str] = None
    paper_ids: Tuple[str, ...] = ()
    dataset: Optional[str] = None
    metrics: Tuple[Tuple[str, float], ...] = ()
    origin_url: Optional[str] = None
    notes: Optional[str] = None

    def __post_init__(self):
        """Refuse values that would fail later, one source or batch at a time (or allocate terabytes).

        Raises:
            ValueError: naming the field, its value and what it takes.
        """
        def bad(key: str, expected: str) -> ValueError:
            return ValueError(f"pretrained cfg {self.name or '?'}: {key}={getattr(self, key)!r}: expected {expected}")

        def reals(value, n: int) -> bool:
            return isinstance(value, (tuple, list)) and len(value) == n and all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)

        def whole(value, low: int, high: int) -> bool:
            return isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= value <= high

        if not whole(self.num_frames, 1, 1024):
            raise bad("num_frames", "a whole number of frames in [1, 1024]")
        size = self.input_size
        if not (isinstance(size, (tuple, list)) and len(size) == 3 and size[0] == 3
                and all(whole(s, 1, 8192) for s in size)):
            raise bad("input_size", "(3, H, W) with H and W whole numbers of pixels in [1, 8192]")
        if not reals(self.mean, 3):
            raise bad("mean", "three finite numbers, one per colour channel")
        if not reals(self.std, 3) or min(self.std) <= 0:
            raise bad("std", "three positive finite numbers (frames are divided by them), one per colour channel")
        if self.interpolation not in INTERPOLATIONS:
            raise bad("interpolation", f"one of {INTERPOLATIONS}")
        if self.frame_sampling not in SAMPLINGS:
            raise bad("frame_sampling", f"one of {SAMPLINGS}")
        if self.checkpoint_format not in CHECKPOINT_FORMATS:
            raise bad("checkpoint_format", f"one of {CHECKPOINT_FORMATS}")
        if not (isinstance(self.crop_pct, numbers.Real) and 0 < self.crop_pct <= 1):
            raise bad("crop_pct", "a fraction in (0, 1]")
        if not (isinstance(self.crop_margin, numbers.Real) and 0 <= self.crop_margin <= 2):
            raise bad("crop_margin", "a fraction of the face box's longer side in [0, 2]")
        if self.num_classes is not None and not whole(self.num_classes, 0, 1 << 20):
            raise bad("num_classes", "None or a whole number >= 0")
        names = self.class_names
        if names is not None and (not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names)
                                  or self.num_classes is not None and len(names) != self.num_classes):
            raise bad("class_names", f"a list of {self.num_classes if self.num_classes is not None else 'C'} class "
                                     f"names in label order (num_classes={self.num_classes})")

    @property
    def name(self) -> str:
        """``arch.tag`` (``arch`` for the empty tag): the name ``create_model`` takes for these weights."""
        return join_model_name_tag(self.architecture, self.tag)

    @property
    def has_weights(self) -> bool:
        """True when the cfg names a place to load weights from."""
        return bool(self.state_dict is not None or self.file or self.hf_hub_id or self.url)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as plain data (a ``state_dict`` is left out: weights are not metadata)."""
        return {k: v for k, v in dataclasses.asdict(dataclasses.replace(self, state_dict=None)).items()
                if k != "state_dict"}

    # timm code reads a model's pretrained cfg as a mapping: cfg["mean"], cfg.get("input_size"), dict(cfg)
    _ALIASES = {"label_names": "class_names"}  # timm's name for the label order

    def _field(self, key: str) -> str:
        if not isinstance(key, str) or self._ALIASES.get(key, key) not in self.__dataclass_fields__:
            raise KeyError(key)
        return self._ALIASES.get(key, key)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, self._field(key))

    def get(self, key: str, default: Any = None) -> Any:
        """``cfg[key]``, or ``default`` for a field this cfg does not have (as ``dict.get``)."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ALIASES.get(key, key) in self.__dataclass_fields__

    def keys(self):
        """The metadata fields (``to_dict``'s keys; an in-memory ``state_dict`` is not metadata)."""
        return dict.fromkeys(f.name for f in dataclasses.fields(self) if f.name != "state_dict").keys()

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def values(self):
        return [getattr(self, k) for k in self.keys()]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


collections.abc.Mapping.register(PretrainedCfg)  # isinstance(cfg, Mapping), as timm code may check


@dataclasses.dataclass
class DefaultCfg:
    """The tags of one architecture; the default is the first with published weights, else the first."""
    tags: Sequence[str] = ()
    cfgs: Dict[str, PretrainedCfg] = dataclasses.field(default_factory=dict)

    @property
    def default(self) -> PretrainedCfg:
        published = [t for t in self.tags if self.cfgs[t].has_weights]
        return self.cfgs[(published or list(self.tags))[0]]


def split_model_name_tag(name: str) -> Tuple[str, str]:
    """``'arch.tag'`` -> ``('arch', 'tag')``; ``'arch'`` -> ``('arch', '')``."""
    arch, _, tag = name.partition(".")
    return arch, tag


def join_model_name_tag(arch: str, tag: str) -> str:
    """``('arch', 'tag')`` -> ``'arch.tag'``; ``('arch', '')`` -> ``'arch'``."""
    return f"{arch}.{tag}" if tag else arch
