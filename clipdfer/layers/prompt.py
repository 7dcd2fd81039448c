"""Learnable text prompts for CLIP's text encoder (CoOp-style context vectors), and a cache for text features."""

import contextlib
import functools
import sys
from typing import Callable, List, Optional, Sequence, Union

import torch
from torch import nn

from .clip import CLIPTextEncoder, check_distinct_prompts, check_text_lengths, require_bool, tokenize

__all__ = ["PromptLearner", "TextFeatureCache", "CachedTextFeatures", "outside_inference_mode", "source_tensors"]


def outside_inference_mode(fn: Callable) -> Callable:
    """Run ``fn`` with inference mode off, so that the tensors it stores on a module are normal tensors (inference
    tensors would break later autograd passes). Ours."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False):
            return fn(*args, **kwargs)
    return wrapper


class PromptLearner(nn.Module):
    """Context vectors learned in CLIP's token-embedding space: ``[SOS] ctx_1 .. ctx_M <class text> [EOS]``.

    SOS, class text and EOS embeddings are looked up from the text encoder's token embedding at every call.

    Args:
        text_encoder: the CLIP text encoder (its width, context length and, for ``ctx_init``, token embedding).
        class_texts: one text per class, in label order.
        n_ctx: number of context vectors M (ignored with ``ctx_init``: its token count is used).
        class_specific: one set of M vectors per class (C, M, W) instead of one shared set (M, W).
        ctx_init: initialise the context from the embeddings of this text, e.g. ``"a photo of a"``.
        init_std: std of the normal init when ``ctx_init`` is None.
        truncate: cut class texts longer than their budget (context length - 2 - M tokens) instead of raising
            ``ValueError`` (ours).
    """

    def __init__(
            self,
            text_encoder: CLIPTextEncoder,
            class_texts: Sequence[str],
            n_ctx: int = 16,
            class_specific: bool = False,
            ctx_init: Optional[str] = None,
            init_std: float = 0.02,
            truncate: bool = False,
    ):
        super().__init__()
        self.context_length = text_encoder.context_length
        width = text_encoder.token_embedding.weight.shape[1]
        if ctx_init:
            init_tokens = tokenize([ctx_init], self.context_length)[0]
            n_ctx = int(init_tokens.argmax()) - 1  # tokens between SOS and EOS
            with torch.no_grad():
                device = text_encoder.token_embedding.weight.device
                init = text_encoder.token_embedding(init_tokens[1:1 + n_ctx].to(device))
            ctx = init.detach().clone().float()
            if class_specific:
                ctx = ctx.unsqueeze(0).repeat(len(class_texts), 1, 1)
        else:
            shape = (len(class_texts), n_ctx, width) if class_specific else (n_ctx, width)
            ctx = torch.empty(shape)
            nn.init.normal_(ctx, std=init_std)
        self.n_ctx = n_ctx
        self.class_specific = class_specific
        self.ctx_init = ctx_init
        self.truncate = require_bool("truncate", truncate)
        self.ctx = nn.Parameter(ctx)
        self.register_buffer("tokens", self._class_tokens(class_texts), persistent=False)

    def tokenize_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids of prompts ``<context> <text>`` for other texts, to pass as ``tokens`` to :meth:`forward`."""
        return self._tokens(texts)

    def _class_tokens(self, class_texts: Sequence[str], truncate: Optional[bool] = None) -> torch.Tensor:
        tokens = self._tokens(class_texts, truncate)
        check_distinct_prompts(tokens, list(class_texts), "class text", self.truncate if truncate is None else truncate)
        return tokens

    def _tokens(self, class_texts: Sequence[str], truncate: Optional[bool] = None) -> torch.Tensor:
        class_texts = list(class_texts)
        if not (self.truncate if truncate is None else require_bool("truncate", truncate)):
            check_text_lengths(class_texts, self.context_length, self.n_ctx, "class text",
                               "pass truncate=True to cut them after the learned context")
        head = self.ctx_init if self.ctx_init else " ".join(["X"] * self.n_ctx)  # placeholders, replaced by ctx
        return tokenize([f"{head} {text}" for text in class_texts], self.context_length, truncate=True)

    @property
    def num_classes(self) -> int:
        return self.tokens.shape[0]

    @property
    def eot_index(self) -> torch.Tensor:
        return self.tokens.argmax(dim=-1)

    @outside_inference_mode
    def set_class_texts(self, class_texts: Sequence[str], truncate: Optional[bool] = None) -> None:
        """Use other class texts; class-specific contexts must keep their number of classes.

        Raises:
            ValueError: another number of texts for class-specific contexts; a text longer than the budget unless
                ``truncate`` (None: the ``truncate`` given at construction).
        """
        if self.class_specific and len(class_texts) != self.ctx.shape[0]:
            raise ValueError(
                f"the context vectors are class-specific, learned for {self.ctx.shape[0]} classes, but "
                f"{len(class_texts)} texts were given: give {self.ctx.shape[0]} texts, or build a new model for the "
                f"new classes")
        self.tokens = self._class_tokens(class_texts, truncate).to(self.tokens.device)

    def forward(self, token_embedding: nn.Embedding, bias: Optional[torch.Tensor] = None,
                tokens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Prompt embeddings.

        Args:
            token_embedding: the text encoder's token embedding (fills SOS, class text, EOS and padding).
            bias: optional (B, W) added to every context vector (CoCoOp's conditional token).
            tokens: other prompts (N, L) made with :meth:`tokenize_texts`, sharing the (shared) contexts.

        Returns:
            (C, L, W), or (B, C, L, W) with ``bias``; (N, L, W) for ``tokens``.
        """
        if tokens is not None and self.class_specific:
            raise ValueError("class-specific contexts belong to their classes' prompts; other prompts need shared ones")
        emb = token_embedding(self.tokens if tokens is None else tokens)  # (C, L, W)
        c = emb.shape[0]
        ctx = self.ctx.to(emb.dtype)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(c, -1, -1)  # (M, W) -> (C, M, W)
        prefix, suffix = emb[:, :1], emb[:, 1 + self.n_ctx:]
        if bias is None:
            return torch.cat([prefix, ctx, suffix], dim=1)
        b = bias.shape[0]
        ctx = ctx.unsqueeze(0) + bias[:, None, None, :].to(emb.dtype)  # (B, C, M, W)
        return torch.cat([prefix.expand(b, -1, -1, -1), ctx, suffix.expand(b, -1, -1, -1)], dim=2)


def _walk(module: nn.Module, out: List[Optional[torch.Tensor]]) -> None:
    out.extend(module._parameters.values())
    out.extend(module._buffers.values())
    for child in module._modules.values():
        if child is not None:
            _walk(child, out)


def source_tensors(sources: Sequence[Union[nn.Module, torch.Tensor, None]]) -> List[torch.Tensor]:
    """Every parameter and buffer of the modules in ``sources``, and its tensors, in order (None skipped; a shared
    tensor twice), from the modules' own dictionaries: cheaper than ``parameters()`` + ``buffers()``. Ours."""
    out: List[Optional[torch.Tensor]] = []
    for source in sources:
        if isinstance(source, nn.Module):
            _walk(source, out)
        else:
            out.append(source)
    return [t for t in out if t is not None]


def _compute_detached(compute: Callable[[], torch.Tensor], device_type: str) -> torch.Tensor:
    """``compute()`` without gradient and autocast, outside inference mode: full precision, usable by autograd."""
    no_autocast = torch.autocast(device_type, enabled=False) if device_type in ("cpu", "cuda") \
        else contextlib.nullcontext()
    with torch.inference_mode(False), torch.no_grad(), no_autocast:
        return compute()


# torch.compiler.is_exporting() is also True under torch.compile before pytorch#176347 (fixed in 2.13.0): there it
# cannot tell torch.export (strict) from compilation, and only fake tensors tell non-strict export
_IS_EXPORTING_RELIABLE = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 13)


def _exporting(tensors: Sequence[torch.Tensor]) -> bool:
    """True while torch.export traces: non-strict (the default: the module's tensors are fake) or strict."""
    fake = sys.modules.get("torch._subclasses.fake_tensor")  # not imported yet (it loads torch._dynamo): none exists
    if tensors and fake is not None and isinstance(tensors[0], fake.FakeTensor):
        return True
    return _IS_EXPORTING_RELIABLE and torch.compiler.is_exporting()


# torch's own lazy form of torch.compiler.disable (torch >= 2.1); the public one imports torch._dynamo at once
_disable_dynamo = getattr(torch, "_disable_dynamo", None) or torch.compiler.disable


class TextFeatureCache:
    """Text features kept while every tensor they are computed from is unchanged (ours; docs/finetuning.md).

    ``get(compute, *sources)`` computes again when any parameter or buffer of ``sources`` (modules or tensors) changed:
    version counter, storage, dtype, device or identity. The value is full precision, made without gradient. Under
    ``torch.compile`` the check runs outside the graph (one graph break). With an inference-mode tensor among the
    sources nothing is kept. Copies start empty.
    """

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        """Drop the cached value (it is made again on the next ``get``)."""
        self._key: Optional[tuple] = None
        self._tensors: Optional[List[torch.Tensor]] = None
        self._value: Optional[torch.Tensor] = None
        self._storages: Optional[list] = None

    def __deepcopy__(self, memo) -> "TextFeatureCache":
        return TextFeatureCache()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.clear()

    @property
    def value(self) -> Optional[torch.Tensor]:
        """The cached features, or None (read only: ``get`` is the way to use them)."""
        return self._value

    def get(self, compute: Callable[[], torch.Tensor],
            *sources: Union[nn.Module, torch.Tensor, None]) -> torch.Tensor:
        """``compute()``'s value, cached until any tensor of ``sources`` changes (see the class docstring)."""
        return self.get_for_tensors(compute, source_tensors(sources))

    def get_for_tensors(self, compute: Callable[[], torch.Tensor], tensors: List[torch.Tensor]) -> torch.Tensor:
        """:meth:`get` with the sources' tensors already listed (:func:`source_tensors`): no second walk."""
        if _exporting(tensors):  # an exported program is a snapshot: the features become a constant
            if self._value is not None:
                return self._value
            return _compute_detached(compute, tensors[0].device.type if tensors else "cpu")
        return self._lookup(compute, tensors)

    # outside any compiled graph; torch._dynamo (about 1 s to import) is loaded at the first call, not at ours
    @_disable_dynamo
    def _lookup(self, compute: Callable[[], torch.Tensor], tensors: List[torch.Tensor]) -> torch.Tensor:
        device = tensors[0].device if tensors else None
        try:
            key = (device, *((t._version, t.data_ptr(), t.dtype) for t in tensors))
        except RuntimeError:  # nothing to key on: an inference tensor (no version counter), or a tensor without
            self.clear()      # storage (torch.func.functional_call under vmap): computed, never kept
            return _compute_detached(compute, device.type if device is not None else "cpu")
        held = self._tensors
        if (self._value is None or held is None or key != self._key or len(held) != len(tensors)
                or any(a is not b for a, b in zip(held, tensors))):
            self.clear()  # the old features go before the new ones are made
            value = _compute_detached(compute, device.type if device is not None else "cpu")
            # Holding the tensors and their storages keeps their identities and addresses from passing to other
            # tensors while this key is in use, so an equal key means the same, unchanged memory.
            self._storages = [t.untyped_storage() for t in tensors]
            self._value, self._key, self._tensors = value, key, tensors
        return self._value


class CachedTextFeatures(nn.Module):
    """A prompt head's text features, reused while what they are made from is unchanged; a parameter-free module that
    follows ``train()`` / ``eval()`` and forgets on ``.to()`` / ``.half()`` (ours).

    ``cache(compute, *sources)``: with a gradient needed, computed with it; with ``enabled`` False or compiled in
    training mode, computed without gradient; otherwise kept by a :class:`TextFeatureCache`. Either way the result
    equals a freshly built model's.
    """

    def __init__(self, enabled: bool = True):
        super().__init__()
        self.enabled = enabled
        self._cache = TextFeatureCache()

    @property
    def value(self) -> Optional[torch.Tensor]:
        """The features kept now, or None."""
        return self._cache.value

    def clear(self) -> None:
        """Forget the kept features (never needed for correctness: they are checked at every use)."""
        self._cache.clear()

    def forward(self, compute: Callable[[], torch.Tensor], *sources: Union[nn.Module, torch.Tensor, None]
                ) -> torch.Tensor:
        tensors = source_tensors(sources)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return compute()
        if not self.enabled or (self.training and torch.compiler.is_compiling()):
            with torch.no_grad():
                return compute()
        return self._cache.get_for_tensors(compute, tensors)

    def train(self, mode: bool = True) -> "CachedTextFeatures":
        self.clear()  # features kept for the other phase go
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self.clear()  # .to() / .half(): the old device's or dtype's features go at once
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}"
