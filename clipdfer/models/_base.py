"""The interface every clipdfer model has (:class:`DFERModel`): timm's head contract, and what the builder, training,
evaluation and prediction ask of a model. docs/finetuning.md describes the contract and where ours differs from timm's.
"""

import dataclasses
import logging
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import CLIPFrameEncoder, check_video, get_clip_arch
from ..layers.clip import check_range, check_texts
from ..layers.prompt import CachedTextFeatures, outside_inference_mode
from ._hub import HubMixin
from ._pretrained import WEIGHT_STATES, PretrainedCfg

__all__ = ["DFERModel", "PromptHead", "WEIGHT_STATES"]

_logger = logging.getLogger(__name__)


def _version(tensor: torch.Tensor) -> int:
    try:
        return tensor._version
    except RuntimeError:  # an inference-mode tensor keeps no version counter: its writes cannot be seen
        return -1


class PromptHead(nn.Module):
    """A text-prompt classifier as a module: pre-logits (B, ``in_features``) -> logits (B, ``out_features``).

    What ``get_classifier()`` returns for a text-prompt head: a view whose children are the model's own modules, not
    copies; calling it runs the model's head.
    """

    def __init__(self, model: "DFERModel"):
        super().__init__()
        object.__setattr__(self, "_model", model)  # not a child: the view must not own the whole model
        for name in model.prompt_head_parts:
            part = getattr(model, name)
            if isinstance(part, nn.Parameter):
                self.register_parameter(name, part)
            elif isinstance(part, nn.Module):
                self.add_module(name, part)
        self.in_features = model.head_hidden_size
        self.out_features = model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._model._prompt_logits(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, text-prompt classifier"


class DFERModel(HubMixin, nn.Module):
    """Base of the model families: a clip (B, T, 3, H, W) -> (B, ``num_classes``) logits.

    Attributes:
        clip_arch, class_names, num_classes, num_frames: the CLIP shape, the classes in label order, T.
        num_features: the last dimension of ``forward_features`` (the CLIP embedding D), as in timm.
        head_hidden_size: width of the pre-logits embedding: D, or more for a head that reads a sequence.
        head: the classifier module (``nn.Linear``), or None while the text-prompt head classifies.
        pretrained_cfg, model_args: set by the builder (what ``config.json`` records).
        weights: ``random``, ``pretrained``, ``finetuned`` or ``loaded`` (see the property).
        text_cache: the text-prompt head's features (:class:`~clipdfer.layers.CachedTextFeatures`).

    A family sets the class attributes ``family`` (its recipe's name), ``zero_shot``, ``prompt_head_parts`` (what
    ``get_classifier()`` shows), ``text_only_parts`` (removed with the prompt head), ``training_only_parts`` (used only
    by ``training_losses``; DDP with this model as its root ignores them) and ``release_convert_command``; implements
    ``forward_features``, ``_pool`` (-> pre-logits; identity by default) and ``_prompt_logits``; and may override
    ``training_losses``, ``set_stage``, ``group_parameters``, ``no_weight_decay`` and ``_class_args``. Its loading
    adapters are module functions (:mod:`clipdfer.models._loading`).
    """

    family: ClassVar[str] = ""
    zero_shot: ClassVar[bool] = False
    prompt_head_parts: ClassVar[Tuple[str, ...]] = ()
    text_only_parts: ClassVar[Tuple[str, ...]] = ()
    training_only_parts: ClassVar[Tuple[str, ...]] = ()
    release_convert_command: ClassVar[Optional[str]] = None

    def __init__(self, clip_arch, class_names: Optional[Sequence[str]], num_frames: int,
                 num_classes: Optional[int] = None):
        super().__init__()
        check_range("num_frames", num_frames, 1, 1024, integer=True)
        self.clip_arch = get_clip_arch(clip_arch)
        self.class_names = check_texts(class_names) if class_names is not None else None
        self.num_classes = len(self.class_names) if self.class_names is not None else num_classes
        self.num_frames = num_frames
        self.num_features = self.clip_arch.embed_dim
        self.head_hidden_size = self.clip_arch.embed_dim  # a family whose pre-logits are wider sets it
        self.head: Optional[nn.Module] = None
        # timm's drop_rate: dropout on the pre-logits, an nn.Dropout always (p=0: none), as timm's (set_drop_rates)
        self.head_drop = nn.Dropout(0.0)
        self.stage = 1
        self.pretrained_cfg = None
        self.model_args: Dict[str, Any] = {}
        self.text_cache = CachedTextFeatures()  # the prompt head's text features (families may add more caches)
        self._classifier_args: Optional[Dict[str, Any]] = None  # what reset_classifier did, for config.json
        self._class_args_before_reset: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------------------------------------ timm's head contract
    @property
    def required_num_frames(self) -> Optional[int]:
        """The T a clip must have (MSTA and A³lign-DFER's sequences need their T); None: any T."""
        return None

    @property
    def max_num_frames(self) -> Optional[int]:
        """The largest T a clip may have (positions learned for T frames); None: any."""
        return self.required_num_frames

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame features of the image encoder: (B, T, 3, H, W) -> (B, T, D)."""
        check_video(video, self.image_encoder.image_size, self.required_num_frames, rebuild=self._frames_advice)
        return self.image_encoder(video)

    def _frames_advice(self, num_frames: int) -> Optional[str]:
        """The arguments of a model that takes ``num_frames`` frames; None when these weights cannot serve it."""
        return f"num_frames={num_frames}" if self.weights == "random" else None

    def features_from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """What the head reads, from per-frame features: (B, T, D) -> (B, D) or (B, T, D)."""
        raise NotImplementedError

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        """Features of a clip batch (B, T, 3, H, W), as the family's head reads them: (B, D) or (B, T, D)."""
        return self.features_from_frames(self.encode_frames(video))

    @property
    def frames_independent(self) -> bool:
        """True when the image encoder encodes every frame on its own (plain CLIP, not InterFIT): overlapping windows
        can share a frame's features (``encode_frame_batch`` + ``features_from_frames``)."""
        return type(self.image_encoder) is CLIPFrameEncoder

    def encode_frame_batch(self, frames: torch.Tensor) -> torch.Tensor:
        """Features of single frames: (N, 3, H, W) -> (N, D), for a model whose frames are encoded independently."""
        if not self.frames_independent:
            raise RuntimeError(f"{type(self).__name__}'s frames interact inside its image encoder "
                               f"({type(self.image_encoder).__name__}): encode whole clips with encode_frames")
        return self.image_encoder(frames.unsqueeze(1))[:, 0]

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        """``forward_features`` output -> the (B, head_hidden_size) pre-logits embedding."""
        return features

    def _prompt_logits(self, pre_logits: torch.Tensor) -> torch.Tensor:
        """The family's text-prompt head: pre-logits (B, head_hidden_size) -> logits (B, C)."""
        raise NotImplementedError(f"{type(self).__name__} has no text-prompt head")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from ``forward_features``'s output: (B, ...) -> (B, num_classes).

        Args:
            x: what ``forward_features`` returns.
            pre_logits: return the (B, head_hidden_size) embedding the classifier reads instead of the logits.
        """
        x = self._pool(x)
        if self.head_drop is not None and self.head_drop.p:  # (None: a model of an older clipdfer, unpickled)
            x = self.head_drop(x)
        if pre_logits:
            return x
        if self.head is not None:
            return self.head(x)
        return self._prompt_logits(x)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) clips, prepared as ``pretrained_cfg`` says -> (B, num_classes) logits (the (B,
        head_hidden_size) embedding after ``reset_classifier(0)``)."""
        return self.forward_head(self.forward_features(video))

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The module that maps the pre-logits embedding to the logits: ``head``, or a :class:`PromptHead` view."""
        if self.head is not None:
            return self.head
        return PromptHead(self)

    @property
    def classifier_modules(self) -> Union[str, Tuple[str, ...], None]:
        """timm's ``pretrained_cfg["classifier"]``: ``"head"`` for a linear head, else the attributes that form the
        text-prompt head (``prompt_head_parts``), None when there are none."""
        if self.head is not None:
            return "head"
        return tuple(self.prompt_head_parts) or None

    @property
    def has_prompt_head(self) -> bool:
        """True while the family's text-prompt head classifies (no ``head`` module)."""
        return self.head is None

    @outside_inference_mode
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, *,
                         class_names: Optional[Sequence[str]] = None, linear: bool = False) -> None:
        """A new classifier for ``num_classes`` outputs, as timm's (docs/finetuning.md has the table).

        ``0``: none, ``forward`` returns the embedding. A linear head: a new
        ``nn.Linear(head_hidden_size, num_classes)``. A text-prompt head: ``class_names`` -> ``set_classes`` (the head
        kept); ``linear=True`` replaces it by a linear head, removing the modules only it used (the text side cannot be
        restored). ``save_pretrained`` records the reset.

        Args:
            num_classes: outputs of the new classifier; 0 for none.
            global_pool: timm's argument; only None (pooling over frames is the family's architecture).
            class_names: labels of the new classes; for a text-prompt head, the new class texts.
            linear: replace a text-prompt head by a linear one.

        Raises:
            ValueError: ``global_pool`` not None, ``num_classes`` negative or not an int, ``class_names`` not
                ``num_classes`` long, or a text-prompt head given neither ``class_names`` nor ``linear=True``.
        """
        if global_pool is not None:
            raise ValueError(f"global_pool={global_pool!r}: {type(self).__name__} pools frames as its architecture "
                             f"defines; leave global_pool=None (to change classes: class_names=[...])")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r}: expected 0 (no classifier: the embedding) or a positive "
                             f"number of classes")
        names = None if class_names is None else (check_texts(class_names) if num_classes or class_names else ())
        if names is not None and len(names) != num_classes:
            raise ValueError(f"num_classes={num_classes} but {len(names)} class_names {list(names)}: give one name per "
                             f"class")
        if num_classes and self.has_prompt_head and not linear:
            if names is None:
                same_head = (f"reset_classifier({num_classes}, class_names=[...]) or set_classes([...]) with "
                             f"{num_classes} names keeps the text-prompt head" if self._can_set_classes else
                             f"its classes are fixed at construction: clipdfer.create_model(name, class_names=[...]) "
                             f"with {num_classes} names gives that text-prompt head")
                raise ValueError(
                    f"{type(self).__name__} classifies by cosine similarity to class texts, so a new classifier means "
                    f"new class texts: {same_head}; reset_classifier({num_classes}, linear=True) "
                    f"replaces it by a randomly initialised nn.Linear({self.head_hidden_size}, {num_classes}); "
                    f"reset_classifier(0) gives the {self.head_hidden_size}-d embedding")
            self.set_classes(names)
            return
        if self.has_prompt_head:
            self._class_args_before_reset = self._class_args()
            self._remove_prompt_head()
        if num_classes:
            names = names or tuple(f"class_{i}" for i in range(num_classes))
            ref = next(self.parameters())
            self.head = nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
        else:
            self.head = nn.Identity()
            names = ()
        self.class_names, self.num_classes = names, num_classes
        self._classifier_args = {"num_classes": num_classes, "class_names": list(names), "linear": True}

    def _remove_prompt_head(self) -> None:
        for name in self.prompt_head_parts + self.text_only_parts:
            if getattr(self, name, None) is not None:
                setattr(self, name, None)  # a registered module, parameter or buffer becomes None: out of state_dict
        self.clear_text_cache()

    def set_classes(self, class_names: Sequence[str], **kwargs) -> None:
        """Use other classes (open vocabulary): only the class texts change."""
        raise NotImplementedError(f"{type(self).__name__} cannot change its classes after construction: create it "
                                  f"with class_names=[...] (clipdfer.create_model(name, class_names=[...]))")

    @property
    def _can_set_classes(self) -> bool:
        return type(self).set_classes is not DFERModel.set_classes

    def build_kwargs_for_classes(self, class_names: Sequence[str]) -> Optional[Dict[str, Any]]:
        """How this model takes other classes: None where it takes them in place (``set_classes`` on a text-prompt
        head, a new linear head by ``reset_classifier``); else the ``create_model`` keyword arguments that build it
        for them, where its class-specific parts are fixed when it is built (A³lign-DFER's class sentences,
        DFER-CLIP's class-specific contexts for another class count, PMFER's phrases).

        Raises:
            ValueError: the classes need something only the user can give (PMFER: action-unit phrases); the message
                gives the arguments to pass.
        """
        if not self.has_prompt_head or self._can_set_classes:
            return None
        return {"class_names": list(class_names)}

    def _build_advice(self, kwargs: Dict[str, Any]) -> str:
        """``clipdfer.create_model('<name>', ...)`` with ``kwargs``, and the same as ``train --model-kwargs``."""
        import json
        name = getattr(self.pretrained_cfg, "architecture", None) or "NAME"
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return (f"clipdfer.create_model({name!r}, {args}) (clipdfer train: --model-kwargs "
                f"'{json.dumps(kwargs)}')")

    def _require_prompt_head(self, what: str) -> None:
        if not self.has_prompt_head:
            raise RuntimeError(
                f"{what} needs the text-prompt head, but this model classifies with {type(self.head).__name__} "
                f"(reset_classifier or text_head=False): create the model again to classify by class texts")

    def set_drop_rates(self, drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        """timm's ``drop_rate`` and ``drop_path_rate`` (``create_model(name, drop_rate=..., drop_path_rate=...)``).

        Args:
            drop_rate: dropout on the pre-logits embedding, before the classifier (timm's ``head_drop``), in [0, 1).
            drop_path_rate: stochastic depth of the CLIP image tower's blocks, in [0, 1): block i of L drops its
                residual branches with probability ``drop_path_rate * i / (L - 1)`` (timm's ViT rule); both apply in
                training only.

        Raises:
            ValueError: a rate outside [0, 1).
        """
        for name, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            check_range(name, rate, 0.0, 1.0)
            if rate >= 1:
                raise ValueError(f"{name}={rate}: expected a probability in [0, 1) (1 would drop everything)")
        self.head_drop = nn.Dropout(drop_rate)
        self.image_encoder.set_drop_path(drop_path_rate)
        for name, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):  # what save_pretrained keeps
            if rate:
                self.model_args[name] = float(rate)
            else:
                self.model_args.pop(name, None)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups by depth for layer-wise learning-rate decay (``timm.optim``), as timm's ViT.

        The CLIP image tower's stem, then one group per visual block (``ln_post`` and ``proj`` with the last). The rest
        (new modules, a trainable text tower) is unmatched, so timm gives it the last group: the full rate. ``coarse``
        changes nothing.
        """
        return dict(
            stem=r"^image_encoder\.visual\.(?:class_embedding|positional_embedding|conv1|ln_pre)",
            blocks=[(r"^image_encoder\.visual\.transformer\.resblocks\.(\d+)\.", None),
                    (r"^image_encoder\.visual\.(?:ln_post|proj)", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each visual layer in the backward pass instead of storing its activations."""
        self.image_encoder.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameter names to exclude from weight decay besides biases and norms (1-d parameters)."""
        return {"image_encoder.visual.class_embedding", "image_encoder.visual.positional_embedding"}

    @torch.jit.ignore
    def group_parameters(self) -> Dict[str, List[nn.Parameter]]:
        """Trainable parameters by origin: ``backbone`` (pretrained CLIP) and ``new`` (the rest); see
        ``optim.param_groups``."""
        groups: Dict[str, List[nn.Parameter]] = {"backbone": [], "new": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                pretrained = name.startswith(("image_encoder.visual.", "text_encoder."))
                groups["backbone" if pretrained else "new"].append(p)
        return groups

    # ------------------------------------------------------------------------------------------ training
    def training_losses(self, video: torch.Tensor, labels: torch.Tensor, progress: float = 0.0
                        ) -> Dict[str, torch.Tensor]:
        """The losses of a training step: ``{"cls", "total"}`` (cross-entropy), more for families with auxiliary losses.

        Args:
            video: (B, T, 3, H, W) clips.
            labels: (B,) class indices.
            progress: fraction of training done, in [0, 1] (schedules inside a family's losses).
        """
        if not self.num_classes:
            raise RuntimeError("the model has no classifier (reset_classifier(0)): give it one before training, "
                               "e.g. reset_classifier(n, linear=True)")
        loss = F.cross_entropy(self(video), labels)
        return {"cls": loss, "total": loss}

    @property
    def num_stages(self) -> int:
        """Training stages, run in order (A³lign-DFER's BAP has 3); ``set_stage`` switches between them."""
        return 1

    def set_stage(self, stage: int, sync: Optional[bool] = None) -> None:
        """Switch to training stage ``stage`` (1-based); a one-stage model has only stage 1."""
        if stage != 1:
            raise ValueError(f"stage={stage}: {type(self).__name__} trains in one stage (stage 1)")

    # ------------------------------------------------------------------------------------------ weights
    @property
    def classifier_keys(self) -> Tuple[str, ...]:
        """State-dict keys whose shape depends on the classes: a checkpoint for other classes leaves them at their
        initialisation (with a warning) instead of failing."""
        if isinstance(self.head, nn.Linear):
            return ("head.weight", "head.bias")
        return self._prompt_classifier_keys() if self.has_prompt_head else ()

    def _prompt_classifier_keys(self) -> Tuple[str, ...]:
        return ()

    @property
    def pretrained_cfg(self) -> Optional[PretrainedCfg]:
        """What the weights are and expect (set by the builder), following the model: its classes (``class_names``,
        ``num_classes``, ``label_names``), T and classifier now. Once the classes differ from the weights' (other
        ``class_names``, ``set_classes``, ``reset_classifier``), what described those classes (``dataset``,
        ``metrics``, ``notes``) no longer applies and is cleared; ``tag`` and the rest still say whose weights."""
        cfg = self.__dict__.get("_pretrained_cfg")
        if cfg is None:
            return None
        names = tuple(self.class_names) if self.class_names is not None else None  # a head without names
        current = dict(class_names=names, num_classes=self.num_classes, num_frames=self.num_frames,
                       classifier=self.classifier_modules)
        if all(getattr(cfg, k) == v for k, v in current.items()):
            return cfg
        if names != cfg.class_names or self.num_classes != cfg.num_classes:
            current.update(dataset=None, metrics=(), notes=f"Classes changed from those of {cfg.name or 'its cfg'} "
                                                           f"({', '.join(cfg.class_names or ())}).")
        return dataclasses.replace(cfg, **current)

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: Optional[PretrainedCfg]) -> None:
        self.__dict__["_pretrained_cfg"] = cfg

    @property
    def default_cfg(self) -> Optional[PretrainedCfg]:
        """timm's older name of ``pretrained_cfg`` (a mapping too: ``model.default_cfg["mean"]``)."""
        return self.pretrained_cfg

    @property
    def weights(self) -> str:
        """What the weights are, one of :data:`WEIGHT_STATES`, as recorded by the builder, the trainer or you.

        Any later write to a parameter or replacement of one makes it ``loaded`` (a ``.data`` write is not seen); a
        parameter under a new name since (a head from ``reset_classifier``) turns ``finetuned`` into ``pretrained``;
        unrecorded, or a model whose tensors keep no version counter (made under ``torch.inference_mode()``):
        ``loaded``. Moves and casts keep it.

        Raises:
            ValueError: setting a value not in :data:`WEIGHT_STATES`.
        """
        record = self.__dict__.get("_weights_record")
        if record is None:
            return "loaded"
        state, seen = record
        new = False
        for name, p in self.named_parameters():
            if name not in seen:
                new = True
            elif seen[name] != (id(p), _version(p)) or seen[name][1] < 0:  # written, replaced, or cannot be told
                return "loaded"
        return "pretrained" if new and state in ("pretrained", "finetuned") else state

    @weights.setter
    def weights(self, state: str) -> None:
        if state not in WEIGHT_STATES:
            raise ValueError(f"weights={state!r}: expected one of {sorted(WEIGHT_STATES)}")
        # ids, not references: a record must not keep removed tensors alive, nor stop torch swapping them
        self.__dict__["_weights_record"] = (state, {n: (id(p), _version(p)) for n, p in self.named_parameters()})

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_weights_record"] = self.weights  # a copy holds what these weights are: recorded for its tensors
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        weights = state.pop("_weights_record", None)
        super().__setstate__(state)
        if weights is not None:
            self.weights = weights

    @property
    def is_finetuned(self) -> bool:
        """True when the weights are known to be fine-tuned for expressions (``weights == "finetuned"``)."""
        return self.weights == "finetuned"

    def weights_notice(self) -> Optional[str]:
        """None when predictions mean something (fine-tuned weights, or a zero-shot model's pretrained ones); else why
        not."""
        if self.is_finetuned or (self.zero_shot and self.has_prompt_head and self.weights == "pretrained"):
            return None
        return WEIGHT_STATES[self.weights]

    def _class_args(self) -> Dict[str, Any]:
        """Constructor arguments that follow the classes and may change after construction (``set_classes``)."""
        return {"class_names": list(self.class_names)}

    @property
    def _ddp_params_and_buffers_to_ignore(self) -> List[str]:
        """Names DDP leaves alone when this model is its root: every parameter and buffer of ``training_only_parts``."""
        names: List[str] = []
        for part in self.training_only_parts:
            value = getattr(self, part, None)
            if isinstance(value, nn.Module):
                names += [f"{part}.{n}" for n, _ in value.named_parameters()]
                names += [f"{part}.{n}" for n, _ in value.named_buffers()]
            elif isinstance(value, torch.Tensor):
                # both spellings: DDP names a root parameter "name" in one place and ".name" in another (torch 2.14)
                names += [part, f".{part}"]
        return names

    # ------------------------------------------------------------------------------------------ text features
    @property
    def cache_text(self) -> bool:
        """Whether text features are kept between calls (False: computed in every forward)."""
        return all(m.enabled for m in self.modules() if isinstance(m, CachedTextFeatures))

    @cache_text.setter
    def cache_text(self, enabled: bool) -> None:
        for m in self.modules():
            if isinstance(m, CachedTextFeatures):
                m.enabled = bool(enabled)

    def clear_text_cache(self) -> None:
        """Drop kept text features now: to free memory, or after a ``.data`` write the cache cannot see."""
        for m in self.modules():
            if isinstance(m, CachedTextFeatures):
                m.clear()
