"""The blocks of clipdfer.layers on their own, against references written from the equations or PyTorch/open_clip."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipdfer.layers import (
    MSTA, Attention, BiEhPro, BiLSTM, CLIPFrameEncoder, CLIPTextEncoder, InterFIT, build_open_clip, tokenize,
)


def test_attention_matches_nn_multihead_attention():
    attn = Attention(32, num_heads=4)
    ref = nn.MultiheadAttention(32, 4, batch_first=True)
    ref.in_proj_weight.data.copy_(attn.qkv.weight)
    ref.in_proj_bias.data.copy_(attn.qkv.bias)
    ref.out_proj.load_state_dict(attn.proj.state_dict())
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 3, 32)
    torch.testing.assert_close(attn(x), ref(x, x, x, need_weights=False)[0])
    torch.testing.assert_close(attn(x, ctx), ref(x, ctx, ctx, need_weights=False)[0])
    with pytest.raises(ValueError, match="not divisible"):
        Attention(30, num_heads=4)


def test_text_encoder_matches_open_clip_encode_text():
    clip = build_open_clip("test").eval()
    enc = CLIPTextEncoder(clip)
    tokens = tokenize(["happiness", "a photo of a sad face.", "neutral"])
    with torch.no_grad():
        torch.testing.assert_close(enc(tokens), clip.encode_text(tokens), rtol=1e-5, atol=1e-5)


def test_frame_encoder_is_open_clip_per_frame():
    clip = build_open_clip("test").eval()
    enc = CLIPFrameEncoder(clip.visual)
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        ref = clip.encode_image(video.flatten(0, 1)).view(2, 3, -1)
        torch.testing.assert_close(enc(video), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_clip_block_mlp_matches_open_clip_mlp(act):
    """The folded QuickGELU MLP gives open_clip's values and gradients; other activations take open_clip's path."""
    from clipdfer.layers.clip import clip_block_mlp
    torch.manual_seed(0)
    clip = build_open_clip("test")
    mlp = clip.visual.transformer.resblocks[0].mlp
    if act == "gelu":
        mlp.gelu = nn.GELU()
    x = torch.randn(3, 5, mlp.c_fc.in_features, requires_grad=True)
    ref = mlp(x)
    out = clip_block_mlp(mlp, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    params = [x, mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight]
    g_ref = torch.autograd.grad(ref.square().sum(), params)
    g = torch.autograd.grad(out.square().sum(), params)
    for u, v in zip(g, g_ref):  # fp32 sums in another order: an error on the scale of the tensor's largest entries
        torch.testing.assert_close(u, v, rtol=1e-4, atol=2e-6 * v.abs().max().item())
    with torch.no_grad():  # the in-place activation of the no-grad path
        torch.testing.assert_close(clip_block_mlp(mlp, x), ref.detach(), rtol=1e-5, atol=1e-6)
    if act == "quick_gelu":  # open_clip's own blocks take the folded path: their modules are not called

        def fail(*args):
            raise AssertionError("the MLP module ran")

        for m in (mlp, mlp.c_fc, mlp.gelu, mlp.c_proj):
            m.forward = fail
        clip_block_mlp(mlp, x)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_clip_block_attention_calls_hooked_or_wrapped_modules(is_causal, batch_first):
    from clipdfer.layers.clip import clip_block_attention
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        ref = clip_block_attention(attn, x, is_causal)  # the SDPA path on the module's weights
        seen = []
        handle = attn.register_forward_hook(lambda m, i, o: seen.append(True))
        torch.testing.assert_close(clip_block_attention(attn, x, is_causal), ref, rtol=1e-5, atol=1e-6)
        handle.remove()
        assert seen == [True]

        class Doubled(nn.MultiheadAttention):  # a stand-in for an adapter: changes what the layer computes
            def forward(self, *args, **kwargs):
                out, w = super().forward(*args, **kwargs)
                return 2 * out, w

        wrapped = Doubled(16, 4, batch_first=batch_first)
        wrapped.load_state_dict(attn.state_dict())
        torch.testing.assert_close(clip_block_attention(wrapped, x, is_causal), 2 * ref, rtol=1e-5, atol=1e-6)


def test_clip_block_mlp_respects_hooks_and_wrapped_linears():
    """Fine-tuning code that hooks or replaces c_fc / c_proj (feature taps, LoRA) must see its module run."""
    from clipdfer.layers.clip import clip_block_mlp
    torch.manual_seed(0)
    mlp = build_open_clip("test").visual.transformer.resblocks[0].mlp
    x = torch.randn(2, 3, mlp.c_fc.in_features)
    seen = []
    handle = mlp.c_fc.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    clip_block_mlp(mlp, x)
    handle.remove()
    assert seen == [(2, 3, mlp.c_fc.out_features)]

    class Scaled(nn.Linear):  # a stand-in for an adapter: changes what the layer computes
        def forward(self, inp):
            return 2 * super().forward(inp)

    scaled = Scaled(mlp.c_proj.in_features, mlp.c_proj.out_features)
    scaled.load_state_dict(mlp.c_proj.state_dict())
    mlp.c_proj = scaled
    with torch.no_grad():
        torch.testing.assert_close(clip_block_mlp(mlp, x), mlp(x))
        other = nn.Sequential(nn.Linear(mlp.c_fc.in_features, 4), nn.ReLU())  # any replacement MLP runs as it is
        torch.testing.assert_close(clip_block_mlp(other, x), other(x))


@pytest.mark.parametrize("batch,steps", [(1, 8), (3, 5)])
def test_bilstm_equals_nn_lstm(batch, steps):
    torch.manual_seed(0)
    lstm, proj = nn.LSTM(16, 12, bidirectional=True, batch_first=True), nn.Linear(24, 16)
    x = torch.randn(batch, steps, 16, requires_grad=True)
    ref = proj(lstm(x)[0])
    for impl in ("unrolled", "native"):
        ours = BiLSTM.from_lstm(lstm, proj, impl=impl)
        out = ours(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        g_ref = torch.autograd.grad(ref.square().sum(), [x, lstm.weight_hh_l0_reverse, lstm.bias_ih_l0],
                                    retain_graph=True)
        g = torch.autograd.grad(out.square().sum(), [x, ours.weight_hh_t, ours.bias_ih])
        torch.testing.assert_close(g[0], g_ref[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g[1][1].t(), g_ref[1], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g[2][0], g_ref[2], rtol=1e-4, atol=1e-6)
    back = ours.to_lstm()
    torch.testing.assert_close(back(x)[0], lstm(x)[0])


@pytest.mark.parametrize("batch,steps", [(1, 8), (3, 5)])
def test_bilstm_unrolled_equals_native(batch, steps):
    torch.manual_seed(0)
    native = BiLSTM(16, 12, 16, impl="native")
    unrolled = BiLSTM(16, 12, 16, impl="unrolled")
    unrolled.load_state_dict(native.state_dict())
    x = torch.randn(batch, steps, 16, requires_grad=True)
    a, b = native(x), unrolled(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ga = torch.autograd.grad(a.square().sum(), [x] + list(native.parameters()))
    gb = torch.autograd.grad(b.square().sum(), [x] + list(unrolled.parameters()))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-6)


def test_interfit_layer_shapes_and_any_num_frames():
    clip = build_open_clip("test")
    enc = InterFIT(clip.visual)
    assert len(enc.interaction) == len(enc.blocks) == 2
    lstm = enc.interaction[0].bilstm
    assert lstm.hidden_size == enc.width and lstm.weight_hh_t.shape == (2, enc.width, 4 * enc.width)
    for t in (1, 4, 9):
        assert enc(torch.randn(2, t, 3, 32, 32)).shape == (2, t, 32)
    # zero-initialised MHSA output: the interaction token equals the token Linear of the class token at init
    inter = enc.interaction[0]
    cls = torch.randn(2, 4, 64)
    torch.testing.assert_close(inter(cls), inter.token(cls))


def _interfit_layer_reference(enc, i, x, num_frames):
    """One InterFIT layer from PyTorch's modules: eq. 2 with nn.LSTM and nn.MultiheadAttention, then eq. 3 with the
    pretrained block's nn.MultiheadAttention called as a module over the frame's tokens and its interaction token
    (appended last), which is dropped before the block's MLP."""
    layer, block = enc.interaction[i], enc.blocks[i]
    n, length, w = x.shape
    cls = x[:, 0].reshape(n // num_frames, num_frames, w)
    tokens = F.linear(cls, layer.token.weight, layer.token.bias)  # i_t
    h = F.linear(layer.bilstm.to_lstm()(tokens)[0], layer.bilstm.proj.weight, layer.bilstm.proj.bias)
    hn = _ln(h, layer.norm)
    inter = tokens + _mha(layer.attn)(hn, hn, hn, need_weights=False)[0]  # eq. 2
    xi = torch.cat([x, inter.reshape(n, 1, w)], dim=1)
    y = _ln(xi, block.ln_1)
    if block.attn.batch_first:
        xi = xi + block.attn(y, y, y, need_weights=False)[0]  # eq. 3
    else:  # (L, N, W), as older open_clip releases build it
        y = y.transpose(0, 1)
        xi = xi + block.attn(y, y, y, need_weights=False)[0].transpose(0, 1)
    x = xi[:, :length]
    return x + block.mlp(_ln(x, block.ln_2))


@pytest.mark.parametrize("gate", [False, True])
def test_interfit_layer_against_pytorch_modules(gate):
    torch.manual_seed(0)
    enc = InterFIT(build_open_clip("test").visual, gate=gate)
    for layer in enc.interaction:  # leave the zero init so eq. 2's attention contributes
        nn.init.normal_(layer.attn.proj.weight, std=0.3)
        if gate:
            nn.init.constant_(layer.gate, 1.0)  # g = 1 is eq. 3
    x = torch.randn(2 * 4, 17, 64)  # B = 2 clips of T = 4 frames, 1 + 16 tokens of width 64
    for i in range(len(enc.blocks)):
        with torch.no_grad():
            torch.testing.assert_close(enc.run_block(i, x, 4), _interfit_layer_reference(enc, i, x, 4),
                                       rtol=1e-5, atol=1e-5)


def test_interfit_gate_starts_as_exactly_clip_and_learns():
    torch.manual_seed(0)
    clip = build_open_clip("test").eval()
    enc = InterFIT(clip.visual, gate=True)
    for layer in enc.interaction:
        nn.init.normal_(layer.attn.proj.weight, std=0.3)  # an interaction token far from zero: still ignored
    video = torch.randn(2, 4, 3, 32, 32)
    out = enc(video)
    with torch.no_grad():
        ref = clip.encode_image(video.flatten(0, 1)).view_as(out)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.square().sum().backward()
    assert all(layer.gate.grad is not None and layer.gate.grad.abs() > 0 for layer in enc.interaction)
    ungated = InterFIT(build_open_clip("test").visual)
    assert sum(p.numel() for p in enc.parameters()) == sum(p.numel() for p in ungated.parameters()) + 2


def _msta_reference(z, msta):
    """eqs. 4-8 written out scale by scale, with the fused score Linear split into its n Linear(D, D)."""
    zt = z.transpose(1, 2)
    zs = [F.max_pool1d(zt, k, s) for k, s in zip(msta.kernel_sizes, msta.strides)]  # each (B, D, T')
    z_hat = sum(zs)
    d = msta.dim
    us = [F.linear(z_hat.transpose(1, 2), msta.scale_fc.weight[i * d:(i + 1) * d],
                   msta.scale_fc.bias[i * d:(i + 1) * d]).transpose(1, 2) for i in range(len(zs))]
    w = torch.softmax(torch.stack(us), dim=0)
    z_w = sum(w[i] * zs[i] for i in range(len(zs)))
    return msta.fc_v(z_w.reshape(z.shape[0], -1))


def test_msta_matches_equations():
    msta = MSTA(16, num_frames=8, fc_v_init="normal")
    z = torch.randn(3, 8, 16)
    torch.testing.assert_close(msta(z), _msta_reference(z, msta))
    assert msta.out_len == 2


def test_msta_mean_init_keeps_static_video_feature():
    msta = MSTA(16, num_frames=8)
    z = torch.randn(2, 1, 16).expand(2, 8, 16)
    torch.testing.assert_close(msta(z), z[:, 0])


@pytest.mark.parametrize("t,kernels,strides,ok", [
    (8, (5, 5, 7), (3, 3, 1), True),
    (16, (7, 7, 13), (3, 3, 1), True),
    (16, (5, 5, 7), (3, 3, 1), False),   # lengths 4, 4, 10
    (4, (5, 5, 7), (3, 3, 1), False),    # kernel longer than T
    (8, (5, 5), (3, 3, 1), False),       # one stride too many
])
def test_msta_refuses_inconsistent_scales(t, kernels, strides, ok):
    if ok:
        assert MSTA(8, t, kernels, strides)(torch.randn(1, t, 8)).shape == (1, 8)
    else:
        with pytest.raises(ValueError, match="MSTA"):
            MSTA(8, t, kernels, strides)


def test_msta_rejects_wrong_num_frames_at_call():
    with pytest.raises(ValueError, match="T=8.*got \\(1, 16, 8\\)"):
        MSTA(8, 8)(torch.randn(1, 16, 8))


def _mha(attn: Attention) -> nn.MultiheadAttention:
    """PyTorch's own multi-head attention holding the same weights as one of ours."""
    dim = attn.qkv.in_features
    ref = nn.MultiheadAttention(dim, attn.num_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.weight.copy_(attn.proj.weight)
        ref.out_proj.bias.copy_(attn.proj.bias)
    return ref


def _ln(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _cross_side_reference(x, context, side):
    """One side of a BiEhPro block from plain tensors and nn.MultiheadAttention: pre-LN cross-attention, pre-LN FFN."""
    kv = _ln(context, side.norm_kv)
    x = x + _mha(side.attn)(_ln(x, side.norm_q), kv, kv, need_weights=False)[0]
    fc1, fc2 = side.mlp[0], side.mlp[2]
    return x + F.linear(F.gelu(F.linear(_ln(x, side.norm_mlp), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)


def _biehpro_reference(block, text, visual, text_context=None):
    """eqs. 10-11 written out: each side reads the other's previous value (the text side reads ``text_context``
    instead, when given)."""
    k = text.expand(visual.shape[0], -1, -1)
    v = visual
    kt, vt = k, v
    for blk in block.blocks:
        k_new = _cross_side_reference(kt, vt if text_context is None else text_context, blk.text)
        v_new = _cross_side_reference(vt, kt, blk.visual)
        kt, vt = k_new, v_new
    return k + block.alpha * kt, v + block.beta * vt


@pytest.mark.parametrize("visual_shape", [(4, 32), (4, 1, 32), (4, 6, 32)])
@pytest.mark.parametrize("shared_text", [True, False])
def test_biehpro_standalone(visual_shape, shared_text):
    block = BiEhPro(32, depth=2, num_heads=8)
    visual = torch.randn(*visual_shape)
    text = torch.randn(7, 32) if shared_text else torch.randn(4, 7, 32)
    k_hat, v_hat = block(text, visual)
    assert k_hat.shape == (4, 7, 32)
    assert v_hat.shape == visual.shape
    v3 = visual.unsqueeze(1) if visual.dim() == 2 else visual
    k_ref, v_ref = _biehpro_reference(block, text, v3)
    torch.testing.assert_close(k_hat, k_ref)
    torch.testing.assert_close(v_hat, v_ref.view_as(visual))
    (k_hat.sum() + v_hat.sum()).backward()
    assert block.alpha.grad is not None and block.beta.grad is not None


def test_biehpro_frame_tokens_as_the_text_sides_keys():
    block = BiEhPro(32, depth=2, num_heads=8)
    text, video, frames = torch.randn(7, 32), torch.randn(4, 32), torch.randn(4, 8, 32)
    k_hat, v_hat = block(text, video, text_context=frames)
    k_ref, v_ref = _biehpro_reference(block, text, video.unsqueeze(1), text_context=frames)
    torch.testing.assert_close(k_hat, k_ref)
    torch.testing.assert_close(v_hat, v_ref.view_as(video))
    # with several keys, each class's query attends to the frames differently: its attention output differs
    side = block.blocks[0].text
    per_class = side.attn(side.norm_q(text.expand(4, -1, -1)), side.norm_kv(frames))  # (4, 7, 32)
    assert (per_class - per_class[:, :1]).abs().amax() > 1e-3
    with pytest.raises(ValueError, match="text_context"):
        block(text, video, text_context=torch.randn(3, 8, 32))


def test_biehpro_single_visual_token_gives_uniform_text_attention():
    # one key: text-side attention weights are all 1, so the output is that token's value projection
    block = BiEhPro(16, depth=1, num_heads=4)
    side = block.blocks[0].text
    text, visual = torch.randn(3, 5, 16), torch.randn(3, 1, 16)
    v_proj = F.linear(side.norm_kv(visual), side.attn.qkv.weight[32:], side.attn.qkv.bias[32:])
    expected = side.attn.proj(v_proj).expand(3, 5, 16)
    torch.testing.assert_close(side.attn(side.norm_q(text), side.norm_kv(visual)), expected)


def test_biehpro_text_prompt_only_leaves_visual_unchanged():
    block = BiEhPro(16, depth=3, num_heads=4, update_visual=False)
    visual = torch.randn(2, 16)
    k_hat, v_hat = block(torch.randn(5, 16), visual)
    assert torch.equal(v_hat, visual) and block.beta is None
    assert all(blk.visual is None for blk in block.blocks)


@pytest.mark.parametrize("text,visual,match", [
    ((7, 16), (2, 8), "visual features"),
    ((7, 8), (2, 16), "text features"),
    ((3, 7, 16), (2, 16), "batch sizes differ"),
    ((7, 16), (2, 3, 4, 16), "visual features"),
])
def test_biehpro_bad_shapes(text, visual, match):
    with pytest.raises(ValueError, match=match):
        BiEhPro(16, depth=1, num_heads=4)(torch.randn(*text), torch.randn(*visual))
