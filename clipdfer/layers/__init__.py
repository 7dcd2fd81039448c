"""Reusable blocks of the clipdfer models. Nothing here imports the model registry."""

from .adversarial import dann_lambda, grad_reverse
from .attention import Attention, multi_head_attention
from .biehpro import BiEhPro, BiEhProBlock, CrossAttentionBlock
from .clip import (
    CLIP_ARCHS, CLIPArch, CLIPFrameEncoder, CLIPTextEncoder, build_open_clip, check_video, clip_block_attention,
    clip_block_forward, get_clip_arch, tokenize,
)
from .interfit import InteractionLayer, InterFIT
from .msta import MSTA, msta_output_lengths, msta_scales
from .prompt import CachedTextFeatures, PromptLearner, TextFeatureCache
from .temporal import BiLSTM, TemporalBlock, TemporalTransformer, bilstm_unrolled

__all__ = [
    "dann_lambda", "grad_reverse", "Attention", "multi_head_attention", "BiEhPro", "BiEhProBlock",
    "CrossAttentionBlock", "CLIP_ARCHS", "CLIPArch", "CLIPFrameEncoder", "CLIPTextEncoder", "build_open_clip",
    "check_video", "clip_block_attention",
    "clip_block_forward", "get_clip_arch", "tokenize", "InteractionLayer", "InterFIT", "MSTA", "msta_output_lengths",
    "msta_scales",
    "BiLSTM", "bilstm_unrolled", "PromptLearner", "TextFeatureCache", "CachedTextFeatures", "TemporalBlock",
    "TemporalTransformer",
]
