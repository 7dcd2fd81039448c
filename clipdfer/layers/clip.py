"""CLIP towers from open_clip (state-dict names exactly open_clip's and OpenAI's), run per frame with every frame in one
batch, attention through ``F.scaled_dot_product_attention`` on the blocks' own weights (ours), and input checks.
"""

import dataclasses
import functools
import math
import numbers
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import multi_head_attention

if TYPE_CHECKING:  # open_clip is imported where a tower is built, not with clipdfer
    from open_clip.model import CLIP

__all__ = [
    "CLIPArch", "CLIP_ARCHS", "get_clip_arch", "build_open_clip", "CLIPFrameEncoder", "CLIPTextEncoder",
    "tokenize", "token_counts", "check_text_lengths", "clip_block_forward", "clip_block_attention", "clip_block_mlp",
    "check_video", "check_range", "check_distinct_prompts", "require_bool",
]

_QUICK_GELU = 1.702


@dataclasses.dataclass(frozen=True)
class CLIPArch:
    """Shape of a CLIP model (both towers); ``quick_gelu`` for every OpenAI release."""
    embed_dim: int
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    text_width: int
    text_heads: int
    text_layers: int
    context_length: int = 77
    vocab_size: int = 49408
    mlp_ratio: float = 4.0
    quick_gelu: bool = True


CLIP_ARCHS: Dict[str, CLIPArch] = {
    "vitb32": CLIPArch(512, 224, 32, 768, 12, 12, 512, 8, 12),
    "vitb16": CLIPArch(512, 224, 16, 768, 12, 12, 512, 8, 12),
    "vitl14": CLIPArch(768, 224, 14, 1024, 24, 16, 768, 12, 12),
    # Tiny, for tests: same structure, the real tokenizer's vocabulary, widths small enough to run in milliseconds.
    "test": CLIPArch(32, 32, 8, 64, 2, 2, 32, 2, 2),
}


def get_clip_arch(arch) -> CLIPArch:
    """Look up a CLIP shape by name (``vitb32``, ``vitb16``, ``vitl14``, ``test``) or pass a ``CLIPArch`` through."""
    if isinstance(arch, CLIPArch):
        return arch
    if arch not in CLIP_ARCHS:
        raise ValueError(f"unknown CLIP arch {arch!r}: expected one of {sorted(CLIP_ARCHS)} or a CLIPArch instance")
    return CLIP_ARCHS[arch]


def build_open_clip(arch) -> "CLIP":
    """An open_clip ``CLIP`` model of the given shape, randomly initialised (open_clip's own init)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    a = get_clip_arch(arch)
    vision_cfg = CLIPVisionCfg(
        layers=a.layers, width=a.width, head_width=a.width // a.heads, mlp_ratio=a.mlp_ratio,
        patch_size=a.patch_size, image_size=a.image_size)
    text_cfg = CLIPTextCfg(
        context_length=a.context_length, vocab_size=a.vocab_size, width=a.text_width, heads=a.text_heads,
        layers=a.text_layers, mlp_ratio=a.mlp_ratio)
    return CLIP(a.embed_dim, vision_cfg, text_cfg, quick_gelu=a.quick_gelu)


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer(context_length=context_length)


def token_counts(texts: Sequence[str]) -> List[int]:
    """BPE tokens in each text, without [SOS] and [EOS] (CLIP's tokenizer, lower-cased and cleaned as it does)."""
    encode = _tokenizer(77).encode
    return [len(encode(text)) for text in texts]


def check_text_lengths(texts: Sequence[str], context_length: int, reserved: int = 0, what: str = "text",
                       fix: str = "pass truncate=True to cut them") -> None:
    """Raise ``ValueError`` naming every text longer than ``context_length - 2 - reserved`` tokens (ours: CLIP's
    tokenizer would cut them silently).

    Args:
        texts: the texts to check.
        context_length: the text encoder's context length L (77 for OpenAI's CLIP).
        reserved: tokens of each sequence taken by something else (learned context vectors).
        what: what the texts are, for the message ("class text", "prompt").
        fix: the way to opt in to cutting, for the message.
    """
    budget = context_length - 2 - reserved
    if budget < 1:
        raise ValueError(
            f"{reserved} learned context vectors leave no room for {what}s in a {context_length}-token context "
            f"({context_length} - 2 for [SOS] and [EOS] - {reserved} = {budget}): use at most "
            f"{context_length - 3} context vectors (n_ctx)")
    counts = token_counts(texts)
    over = [(text, n) for text, n in zip(texts, counts) if n > budget]
    if not over:
        return
    shown = ", ".join(f"{_shorten(text)!r} ({n} tokens)" for text, n in over[:10]) + (
        f", and {len(over) - 10} more" if len(over) > 10 else "")
    parts = f"context length {context_length} - 2 for [SOS] and [EOS]" + (
        f" - {reserved} learned context vectors" if reserved else "")
    verb = "do not fit" if len(over) > 1 else "does not fit"
    noun = what + ("s" if len(texts) > 1 else "")
    raise ValueError(
        f"{len(over)} of {len(texts)} {noun} {verb} the text encoder: {shown}; the budget is {budget} tokens "
        f"({parts}). CLIP's tokenizer would cut them there, and texts that differ only after the cut would give "
        f"identical features. Shorten them, or {fix} (opt-in).")


def _shorten(text: str, head: int = 40, tail: int = 40) -> str:
    """Long texts keep their start and their end (texts that differ only at the end stay told apart)."""
    return text if len(text) <= head + tail + 5 else f"{text[:head]} ... {text[-tail:]}"


def check_texts(texts, name: str = "class_names", distinct: bool = True) -> Tuple[str, ...]:
    """``texts`` as a tuple, or ``ValueError`` naming ``name``: not a list of non-empty strings, or (``distinct``) two
    equal ones. Ours."""
    if isinstance(texts, str):
        raise ValueError(f"{name}={texts!r}: expected a list of strings, e.g. [{texts!r}]")
    if isinstance(texts, bytes) or not hasattr(texts, "__iter__"):
        raise ValueError(f"{name}={texts!r}: expected a list of strings")
    texts = tuple(texts)
    bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
    if not texts or bad:
        raise ValueError(f"{name}={list(texts)!r}: expected a non-empty list of non-empty strings"
                         + (f" ({bad[0]!r} is not one)" if bad else ""))
    if distinct:
        seen, repeated = set(), []
        for t in texts:
            if t in seen and t not in repeated:
                repeated.append(t)
            seen.add(t)
        if repeated:
            raise ValueError(f"{name}={list(texts)!r}: {repeated} appear more than once, which would make their "
                             f"classes indistinguishable; give each class its own")
    return texts


def check_range(name: str, value, low: float, high: float, integer: bool = False, optional: bool = False,
                open_low: bool = False) -> None:
    """Raise ``ValueError`` naming the argument, its value and the range unless ``value`` is a number (a whole one
    with ``integer``) in [low, high] ((low, high] with ``open_low``); None passes when ``optional``. The upper bounds
    that models use are ours: far beyond any paper's setting, they stop a typo from allocating terabytes."""
    if value is None and optional:
        return
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value) and (
        value > low if open_low else value >= low) and value <= high
    if not ok:
        what = "a whole number" if integer else "a number"
        raise ValueError(f"{name}={value!r}: expected {what} in {'(' if open_low else '['}{low:g}, {high:g}]"
                         + (" or None" if optional else ""))


def check_distinct_prompts(tokens: torch.Tensor, texts: Sequence[str], what: str = "class",
                           truncated: bool = False) -> None:
    """Refuse classes whose prompts tokenize the same: their scores would be identical and one could never win.

    Args:
        tokens: (C, ...) the token ids of each class's prompt(s).
        texts: the C texts they were made from, for the message.
        truncated: the texts were cut to the text encoder's budget (``truncate=True``), for the message.

    Raises:
        ValueError: naming both texts.
    """
    rows = tokens.reshape(tokens.shape[0], -1).tolist()
    first = {}
    for i, row in enumerate(map(tuple, rows)):
        if row in first:
            j = first[row]
            why = "CLIP's tokenizer lowercases, fixes the text and collapses spaces" + (
                ", and truncate=True cut them to the text encoder's budget" if truncated else "")
            raise ValueError(f"{what} {texts[j]!r} and {texts[i]!r} tokenize the same ({why}): their scores would be "
                             f"identical and one could never win; give the two classes texts that differ")
        first[row] = i


def require_bool(name: str, value) -> bool:
    """``value`` if it is a bool; ``ValueError`` naming the argument otherwise (a string such as "no" is truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected True or False")
    return value


def tokenize(texts: Sequence[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """CLIP's BPE tokenizer (open_clip's): texts -> (N, context_length) int64 token ids.

    Raises:
        ValueError: empty input, or (unless ``truncate``) a text longer than ``context_length - 2`` tokens; with
            ``truncate`` such texts are cut and end with [EOS], as OpenAI's ``clip.tokenize``.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"expected a non-empty list of non-empty strings, got {texts!r}")
    if not require_bool("truncate", truncate):
        check_text_lengths(texts, context_length)
    with torch.device("cpu"):  # token ids are data: never created on a default device such as "meta"
        return _tokenizer(context_length)(texts)


def clip_block_attention(attn: nn.MultiheadAttention, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
    """The self-attention of an open_clip/OpenAI block, with SDPA on the block's own parameters (docs/finetuning.md).

    Args:
        attn: the block's ``nn.MultiheadAttention``; a subclass, wrapper or hooked module is called as a module.
        x: normalised tokens (N, L, W).
        is_causal: causal mask (the text tower).
    """
    if type(attn) is not nn.MultiheadAttention or attn._forward_hooks or attn._forward_pre_hooks:
        return _module_attention(attn, x, is_causal)
    q, k, v = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    out = multi_head_attention(q, k, v, attn.num_heads, is_causal=is_causal)
    return attn.out_proj(out)


def _module_attention(attn: nn.Module, x: torch.Tensor, is_causal: bool) -> torch.Tensor:
    """Self-attention through the module's own forward (batch-first or not), tokens (N, L, W)."""
    length = x.shape[1]
    mask = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1) if is_causal else None
    batch_first = getattr(attn, "batch_first", False)
    tokens = x if batch_first else x.transpose(0, 1)
    out = attn(tokens, tokens, tokens, need_weights=False, attn_mask=mask)[0]
    return out if batch_first else out.transpose(0, 1)


def _plain_linear(m: nn.Module) -> bool:
    """An ``nn.Linear`` itself, with a bias and no hooks: reading its weights gives what calling it would."""
    return type(m) is nn.Linear and m.bias is not None and not (m._forward_hooks or m._forward_pre_hooks)


def clip_block_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The MLP of an open_clip/OpenAI block on its own parameters: ``c_proj(act(c_fc(x)))``, tokens (..., W).

    QuickGELU runs as one ``silu``: ``z * sigmoid(1.702 z) = silu(1.702 z) / 1.702``, the factors folded into the two
    matmuls. Other activations, and wrapped, subclassed, hooked or bias-free Linears, run through the modules.
    """
    fc, proj = getattr(mlp, "c_fc", None), getattr(mlp, "c_proj", None)
    if not (type(getattr(mlp, "gelu", None)).__name__ == "QuickGELU" and type(mlp) is nn.Sequential
            and _plain_linear(fc) and _plain_linear(proj) and not (mlp._forward_hooks or mlp._forward_pre_hooks)):
        return mlp(x)
    shape = x.shape
    h = torch.addmm(fc.bias, x.reshape(-1, shape[-1]), fc.weight.t(), beta=_QUICK_GELU, alpha=_QUICK_GELU)
    h = nn.functional.silu(h, inplace=not (torch.is_grad_enabled() and h.requires_grad))
    return torch.addmm(proj.bias, h, proj.weight.t(), alpha=1.0 / _QUICK_GELU).view(*shape[:-1], proj.out_features)


def clip_block_forward(block: nn.Module, x: torch.Tensor, is_causal: bool = False, drop_path: float = 0.0,
                       training: bool = False) -> torch.Tensor:
    """One pre-LN residual block of CLIP: x + attn(ln_1(x)), then x + mlp(ln_2(x)); tokens (N, L, W). With
    ``drop_path`` > 0 and ``training``, each residual branch is dropped per sample with that probability (stochastic
    depth, ``timm.layers.drop_path``)."""
    x = x + _drop_path(block.ls_1(clip_block_attention(block.attn, block.ln_1(x), is_causal)), drop_path, training)
    return x + _drop_path(block.ls_2(clip_block_mlp(block.mlp, block.ln_2(x))), drop_path, training)


def _drop_path(branch: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    if not rate or not training:
        return branch
    from timm.layers import drop_path
    return drop_path(branch, rate, training)


def _check_blocks(blocks: nn.ModuleList) -> None:
    for i, blk in enumerate(blocks):
        if not (isinstance(getattr(blk, "attn", None), nn.MultiheadAttention) and hasattr(blk, "mlp")):
            raise TypeError(
                f"block {i} is a {type(blk).__name__}: clipdfer runs open_clip's standard ResidualAttentionBlock "
                "(nn.MultiheadAttention + mlp); build the tower with block_type='default' and no custom attention")


def check_video(video: torch.Tensor, image_size: int, num_frames=None, name: str = "video",
                rebuild: Optional[Callable[[int], str]] = None) -> None:
    """Raise a ValueError or TypeError naming the problem and its fix unless ``video`` is a valid clip batch.

    Args:
        video: expected (B, T, 3, image_size, image_size), floating point.
        image_size: the tower's input resolution.
        num_frames: the T the module needs, or None for any.
        rebuild: T -> the model arguments that take T frames, for the message (default ``num_frames=T``; None from
            it: no such advice, e.g. weights learned for the module's T).
    """
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"expected {name} as a torch.Tensor of shape (B, T, 3, H, W), got {type(video).__name__}")
    shape = tuple(video.shape)
    t_txt = "T" if num_frames is None else f"T={num_frames}"
    if video.dim() != 5:
        if video.dim() == 4:
            fix = ("add the missing dimension: video.unsqueeze(0) if this is one clip (T, 3, H, W), "
                   "or video.unsqueeze(1) if it is a batch of single frames (B, 3, H, W)")
        else:
            fix = "reshape it to (batch, frames, channels, height, width)"
        raise ValueError(
            f"expected {name} of shape (B, {t_txt}, 3, {image_size}, {image_size}), got {shape} ({video.dim()}D): "
            f"{fix}")
    if shape[0] == 0:
        raise ValueError(f"expected {name} with at least one clip, got a batch of 0 in shape {shape}: check the "
                         f"data loader or the slicing that produced it")
    if not video.is_floating_point():
        raise TypeError(
            f"expected a floating-point {name} (float32, float16 or bfloat16) normalised as the model's pretrained_cfg "
            f"says, got dtype {video.dtype}: convert with video.float() / 255 and normalise with its mean/std")
    if shape[2] != 3:
        fix = ("frames look channels-last (H, W, 3): use video.permute(0, 1, 4, 2, 3)" if shape[-1] == 3 else
               "grey frames: repeat the channel with video.expand(-1, -1, 3, -1, -1)" if shape[2] == 1 else
               "convert frames to RGB")
        raise ValueError(f"expected 3 colour channels at dim 2 of {name} (B, T, 3, H, W), got {shape}: {fix}")
    if shape[3] != image_size or shape[4] != image_size:
        raise ValueError(
            f"expected {name} frames of {image_size}x{image_size}, got {shape[3]}x{shape[4]} in shape {shape}: "
            f"resize the face crops to {image_size}x{image_size}")
    if num_frames is not None and shape[1] != num_frames:
        build = rebuild(shape[1]) if rebuild is not None else f"num_frames={shape[1]}"
        raise ValueError(f"expected {name} with T={num_frames} frames, got T={shape[1]} in shape {shape}: sample "
                         f"{num_frames} frames per clip" + (f", or build the model with {build}" if build else ""))


class CLIPFrameEncoder(nn.Module):
    """CLIP's image encoder on every frame of a clip, all B*T frames as one batch: (B, T, 3, H, W) -> (B, T, D).

    Args:
        visual: an open_clip ``VisionTransformer`` (class-token pooling, learnable positional embedding).
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        for attr in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj"):
            if not hasattr(visual, attr):
                raise TypeError(f"expected an open_clip VisionTransformer, got {type(visual).__name__} without .{attr}")
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise TypeError("CLIPFrameEncoder needs class-token pooling (pool_type='tok', no attentional pooler)")
        _check_blocks(visual.transformer.resblocks)
        self.visual = visual
        self.grad_checkpointing = False
        self.drop_path_rates = [0.0] * len(visual.transformer.resblocks)  # stochastic depth per block (set_drop_path)

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth: block i of L drops its residual branches with probability ``rate * i / (L - 1)`` in
        training (timm's ViT rule: none in the first block)."""
        n = len(self.blocks)
        self.drop_path_rates = [rate * i / max(1, n - 1) for i in range(n)]

    @property
    def image_size(self) -> int:
        size = self.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    @property
    def width(self) -> int:
        return self.visual.transformer.width

    @property
    def embed_dim(self) -> int:
        return self.visual.proj.shape[1]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """Patch, class and positional embedding then ``ln_pre``: (N, 3, H, W) -> (N, 1 + P, W)."""
        return self.visual._embeds(frames)

    def head(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        """``ln_post`` then ``proj`` on class tokens: (..., W) -> (..., D)."""
        return self.visual.ln_post(cls_tokens) @ self.visual.proj

    def run_block(self, i: int, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Layer i on the frame tokens (B*T, L, W); subclasses add cross-frame work here."""
        return clip_block_forward(self.blocks[i], x, drop_path=self.drop_path_rates[i], training=self.training)

    def _check_placement(self, video: torch.Tensor) -> None:
        weight = self.visual.conv1.weight
        if video.device != weight.device:
            raise ValueError(f"video is on {video.device} but the model is on {weight.device}: "
                             f"move one of them, e.g. video.to('{weight.device}')")
        if video.dtype != weight.dtype and not torch.is_autocast_enabled(video.device.type):
            raise TypeError(f"video is {video.dtype} but the model's weights are {weight.dtype}: convert with "
                            f"video.to({weight.dtype}), or run under torch.autocast('{video.device.type}')")

    def encode_tokens(self, frames: torch.Tensor) -> torch.Tensor:
        """Every output token of single frames through ``ln_post`` and ``proj``: (N, 3, H, W) -> (N, 1 + P, D); token 0
        is the frame feature."""
        check_video(frames.unsqueeze(1), self.image_size, name="frames")
        self._check_placement(frames)
        x = self.embed(frames)
        for i in range(len(self.blocks)):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(self.run_block, i, x, 1, use_reentrant=False)
            else:
                x = self.run_block(i, x, 1)
        return self.head(x)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Encode every frame: (B, T, 3, H, W) -> (B, T, D)."""
        check_video(video, self.image_size)
        self._check_placement(video)
        b, t = video.shape[:2]
        x = self.embed(video.flatten(0, 1))  # (B*T, 3, H, W) -> (B*T, 1 + P, W)
        for i in range(len(self.blocks)):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(self.run_block, i, x, t, use_reentrant=False)
            else:
                x = self.run_block(i, x, t)
        return self.head(x[:, 0]).view(b, t, -1)  # (B*T, W) -> (B, T, D)


class CLIPTextEncoder(nn.Module):
    """CLIP's text encoder, open_clip's text modules under their names: token ids (N, L) -> (N, D) at end-of-text.

    Args:
        clip: an open_clip ``CLIP`` whose text modules are taken (not copied).
    """

    def __init__(self, clip: "CLIP"):
        super().__init__()
        _check_blocks(clip.transformer.resblocks)
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.context_length = clip.context_length

    @property
    def embed_dim(self) -> int:
        return self.text_projection.shape[1]

    def forward_embeddings(self, embeddings: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Encode token embeddings, e.g. with learned context vectors in them.

        Args:
            embeddings: (N, L, W) token embeddings before positional embedding, L <= the context length (sequences may
                stop at their end-of-text token: the mask is causal).
            eot_index: (N,) position of the end-of-text token in each row.
        """
        x = self._run(embeddings)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]  # (N, L, W) -> (N, W)
        return self.ln_final(x) @ self.text_projection

    def _run(self, embeddings: torch.Tensor) -> torch.Tensor:
        length = embeddings.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed CLIP's context length {self.context_length}")
        x = embeddings + self.positional_embedding[:length].to(embeddings.dtype)
        for blk in self.transformer.resblocks:
            x = clip_block_forward(blk, x, is_causal=True)
        return x

    def forward_tokens(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Every token's state after the last block and ``ln_final`` (before the projection): (N, L, W) -> (N, L, W)."""
        return self.ln_final(self._run(embeddings))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Encode token ids (N, L) from :func:`tokenize` -> (N, D). The EOT token has the largest id in each row."""
        return self.forward_embeddings(self.token_embedding(tokens), tokens.argmax(dim=-1))

    def encode(self, texts: List[str], truncate: bool = False) -> torch.Tensor:
        """Tokenize and encode strings -> (N, D); a text longer than the context is an error unless ``truncate``."""
        tokens = tokenize(texts, self.context_length, truncate).to(self.token_embedding.weight.device)
        return self(tokens)
