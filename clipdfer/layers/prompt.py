"""Learnable text prompts for CLIP's text encoder (CoOp-style context vectors), and a cache for text features."""

import contextlib
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .clip import CLIPTextEncoder, tokenize

__all__ = ["PromptLearner", "TextFeatureCache"]


class PromptLearner(nn.Module):
    """Context vectors learned in CLIP's token-embedding space: ``[SOS] ctx_1 .. ctx_M <class text> [EOS]``.

    The token embeddings of SOS, of the class text and of EOS are looked up from the text encoder's (frozen) token
    embedding at every call, so they always match the current classes and weights.

    Args:
        text_encoder: the CLIP text encoder (its width, context length and, for ``ctx_init``, token embedding).
        class_texts: one text per class, in label order.
        n_ctx: number of context vectors M (ignored when ``ctx_init`` is given: its token count is used).
        class_specific: one set of M vectors per class (C, M, W) instead of one shared set (M, W).
        ctx_init: initialise the context from the embeddings of this text, e.g. ``"a photo of a"``.
        init_std: std of the normal init when ``ctx_init`` is None.
    """

    def __init__(
            self,
            text_encoder: CLIPTextEncoder,
            class_texts: Sequence[str],
            n_ctx: int = 16,
            class_specific: bool = False,
            ctx_init: Optional[str] = None,
            init_std: float = 0.02,
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
        self.ctx = nn.Parameter(ctx)
        self.register_buffer("tokens", self._tokens(class_texts), persistent=False)

    def tokenize_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids of prompts ``<context> <text>`` for other texts, to pass as ``tokens`` to :meth:`forward`."""
        return self._tokens(texts)

    def _tokens(self, class_texts: Sequence[str]) -> torch.Tensor:
        head = self.ctx_init if self.ctx_init else " ".join(["X"] * self.n_ctx)  # placeholders, replaced by ctx
        return tokenize([f"{head} {text}" for text in class_texts], self.context_length)

    @property
    def num_classes(self) -> int:
        return self.tokens.shape[0]

    @property
    def eot_index(self) -> torch.Tensor:
        return self.tokens.argmax(dim=-1)

    def set_class_texts(self, class_texts: Sequence[str]) -> None:
        """Use other class texts; class-specific contexts must keep their number of classes."""
        if self.class_specific and len(class_texts) != self.ctx.shape[0]:
            raise ValueError(
                f"the context vectors are class-specific, learned for {self.ctx.shape[0]} classes, but "
                f"{len(class_texts)} texts were given: give {self.ctx.shape[0]} texts, or build a new model for the "
                f"new classes")
        self.tokens = self._tokens(class_texts).to(self.tokens.device)

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


class TextFeatureCache:
    """Text features kept while the tensors they were computed from are unchanged.

    The key is each tensor's version counter (bumped by in-place updates such as ``optimizer.step()`` and
    ``load_state_dict``), storage, dtype and device, so the cache refreshes after a training step, a weight load, a
    class change or a move, and never serves stale features. Features are computed without gradient and outside
    autocast, so the cached ones are full precision whatever context first asked for them.
    """

    def __init__(self):
        self._key = None
        self._value: Optional[torch.Tensor] = None

    def clear(self) -> None:
        self._key, self._value = None, None

    def get(self, compute: Callable[[], torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # torch.compile / torch.export: cached features become a constant
            return self._value if self._value is not None else compute()
        key = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)
        if key != self._key or self._value is None:
            device_type = tensors[0].device.type if tensors else "cpu"
            no_autocast = torch.autocast(device_type, enabled=False) if device_type in ("cpu", "cuda") \
                else contextlib.nullcontext()
            with torch.no_grad(), no_autocast:
                self._value = compute()
            self._key = key
        return self._value
