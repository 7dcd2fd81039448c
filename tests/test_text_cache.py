"""Frozen class text features are computed once and reused; they refresh whenever they may have changed."""

import pytest
import torch

import clipdfer


class _Counter:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.calls += 1


def _video(model, batch=2):
    return torch.randn(batch, model.num_frames, 3, 32, 32)


def test_text_encoder_runs_once_in_eval():
    model = clipdfer.create_model("clipdfer_test").eval()
    counter = _Counter(model.text_encoder)
    video = _video(model)
    with torch.no_grad():
        first = model(video)
        for _ in range(3):
            torch.testing.assert_close(model(video), first)
    assert counter.calls == 1


def test_frozen_text_is_cached_in_training_too_and_gets_no_grad():
    model = clipdfer.create_model("clipdfer_test").train()
    counter = _Counter(model.text_encoder)
    for _ in range(2):
        model(_video(model)).sum().backward()
    assert counter.calls == 1
    assert all(p.grad is None for p in model.text_encoder.parameters())


def test_set_classes_refreshes_and_changes_output_width():
    model = clipdfer.create_model("clipdfer_test").eval()
    counter = _Counter(model.text_encoder)
    video = _video(model)
    with torch.no_grad():
        assert model(video).shape == (2, 7)
        model.set_classes(["joy", "boredom", "pain"], prompt_template="a face showing {}.")
        out = model(video)
    assert out.shape == (2, 3) and counter.calls == 2
    assert model.class_names == ("joy", "boredom", "pain") and model.num_classes == 3
    # the new features are those of the new prompts
    expected = model.text_encoder.encode(["a face showing joy.", "a face showing boredom.", "a face showing pain."])
    torch.testing.assert_close(model.text_features(), expected)


def test_cache_cleared_by_load_state_dict_and_dtype_change():
    a = clipdfer.create_model("clipdfer_test").eval()
    b = clipdfer.create_model("clipdfer_test").eval()
    video = _video(a)
    with torch.no_grad():
        b(video)  # fill b's cache with b's random text weights
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(b(video), a(video))
        b.double()
        assert b.text_features().dtype == torch.float64


def test_trainable_text_encoder_recomputes_with_grad_in_training():
    model = clipdfer.create_model("clipdfer_test", freeze_text=False).train()
    counter = _Counter(model.text_encoder)
    for _ in range(2):
        model(_video(model)).sum().backward()
    assert counter.calls == 2
    assert any(p.grad is not None for p in model.text_encoder.parameters())
    model.eval()
    with torch.no_grad():
        model(_video(model))
        model(_video(model))
    assert counter.calls == 3


# ---------------------------------------------------------------------------------------------------------------------
# The rule: after any in-place change of any weight, the next forward, eager or compiled, in any grad mode, equals a
# freshly built model with those weights (issue 19).

FAMILIES = clipdfer.list_models("*_test")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: dynamo's code cache is shared by every model of a class."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


GRAD_MODES = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def _fresh(model):
    """A new model of the same kind holding ``model``'s weights now (nothing cached)."""
    fresh = clipdfer.create_model(model.pretrained_cfg.architecture).train(model.training)
    fresh.load_state_dict(model.state_dict())
    return fresh


def _check_equal(run, model, video):
    expected = _fresh(model)
    for mode, context in GRAD_MODES.items():
        with context():
            out, ref = run(video), expected(video)
        torch.testing.assert_close(out.detach(), ref.detach(), rtol=1e-5, atol=1e-5, msg=lambda m: f"{mode}: {m}")
    if hasattr(model, "phrase_features"):  # PMFER's phrase features, used by its training losses
        torch.testing.assert_close(model.phrase_features(), expected.phrase_features(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model(video)  # an eager call (a user's own loop) fills the cache before the next change


def _step(model, video):
    """One SGD step on everything trainable (eager, training mode), back to eval."""
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if trainable:
        opt = torch.optim.SGD(trainable, lr=1.0)
        torch.manual_seed(3)
        model.training_losses(video, torch.arange(video.shape[0]) % model.num_classes, progress=0.5)["total"].backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", FAMILIES)
def test_forward_follows_every_in_place_weight_change(name, compiled):
    torch.manual_seed(0)
    model = clipdfer.create_model(name).eval()
    run = torch.compile(model, backend="eager") if compiled else model
    video = _video(model)
    with torch.no_grad():
        model(video)  # eager: fills the cache
        run(video)  # compiled (when compiled) with a full cache
    _step(model, video)  # optimizer step (prompts, MAT, temporal modules ...)
    _check_equal(run, model, video)
    with torch.no_grad():  # a write into the frozen text tower, in place
        for p in model.text_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    _check_equal(run, model, video)
    with torch.no_grad():
        model.text_encoder.token_embedding.weight.copy_(torch.randn_like(model.text_encoder.token_embedding.weight))
    _check_equal(run, model, video)
    torch.manual_seed(5)
    model.load_state_dict(clipdfer.create_model(name).state_dict())  # other weights, same tensors
    _check_equal(run, model, video)
    with torch.inference_mode():  # an in-place write inside inference mode
        for p in model.text_encoder.parameters():
            p.mul_(0.5)
    _check_equal(run, model, video)


@pytest.mark.parametrize("name", FAMILIES)
def test_compiled_ema_follows_its_updates(name):
    """timm's train.py pattern: a ModelEmaV3 copy, compiled, evaluated after each update."""
    from timm.utils import ModelEmaV3
    torch.manual_seed(0)
    model = clipdfer.create_model(name)
    ema = ModelEmaV3(model, decay=0.5)
    ema_compiled = torch.compile(ema.module, backend="eager")
    video = _video(model)
    with torch.no_grad():
        ema.module(video)  # eager: fills the cache
    for _ in range(2):
        with torch.no_grad():
            ema_compiled(video)  # compiled with a full cache
        _step(model, video)
        with torch.no_grad():  # a text-tower change too, which the step leaves alone on frozen-text families
            model.text_encoder.ln_final.weight.add_(0.5)
        ema.update(model)
        with torch.no_grad():
            compiled = ema_compiled(video)  # first after the update
            torch.testing.assert_close(compiled, ema.module(video))
            torch.testing.assert_close(compiled, _fresh(ema.module)(video), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_features_cached_in_inference_mode_serve_a_later_backward(name):
    torch.manual_seed(0)
    model = clipdfer.create_model(name).eval()  # eval: the cached features are used again below
    video = _video(model)
    with torch.inference_mode():
        model(video)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:  # zero-shot CLIP: a gradient for the input then
        video.requires_grad_(True)
    model(video).sum().backward()  # "Inference tensors cannot be saved for backward" before
    assert any(p.grad is not None for p in trainable) if trainable else video.grad is not None


@pytest.mark.parametrize("name", ["clipdfer_test", "dferclip_test", "clip_zeroshot_test", "coop_test", "cocoop_test"])
def test_set_classes_inside_inference_mode(name):
    model = clipdfer.create_model(name, **({"class_specific_contexts": False} if name == "dferclip_test" else {}))
    video = _video(model)
    with torch.inference_mode():
        model.set_classes(["happiness", "sadness", "anger"])
        assert model(video).shape == (2, 3)
    video.requires_grad_(True)  # a backward pass also where nothing is trainable (zero-shot CLIP)
    out = model(video)  # "Inference tensors do not track version counter" before
    assert out.shape == (2, 3)
    out.sum().backward()
    fresh = clipdfer.create_model(name, class_names=["happiness", "sadness", "anger"],
                                  **({"class_specific_contexts": False} if name == "dferclip_test" else {}))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(video), fresh.eval()(video))


def test_compiled_eval_reuses_the_features_and_training_graph_has_no_break():
    model = clipdfer.create_model("clipdfer_test").eval()
    counter = _Counter(model.text_encoder)
    compiled = torch.compile(model, backend="eager")
    video = _video(model)
    with torch.no_grad():
        first = compiled(video)
        for _ in range(3):
            torch.testing.assert_close(compiled(video), first)
    assert counter.calls == 1, "compiled eval must reuse the frozen text features"
    # training mode, or cache_text=False: the text features are part of one graph
    model.train()
    torch.compile(model, backend="eager", fullgraph=True)(video).sum().backward()
    model.eval().cache_text = False
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager", fullgraph=True)(video), first)


def test_copies_start_empty_and_moves_drop_the_cache():
    import copy
    import pickle
    model = clipdfer.create_model("clipdfer_test").eval()
    with torch.no_grad():
        model(_video(model))
    assert model.text_cache.value is not None
    assert copy.deepcopy(model).text_cache.value is None
    assert pickle.loads(pickle.dumps(model)).text_cache.value is None
    model.to(torch.float64)
    assert model.text_cache.value is None
    with torch.no_grad():
        assert model(_video(model).double()).dtype == torch.float64


def test_ensembles_through_torch_func_and_a_text_tower_in_another_dtype():
    import copy
    torch.manual_seed(0)
    models = [clipdfer.create_model("clipdfer_test").eval() for _ in range(2)]
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    video = _video(models[0])
    with torch.no_grad():
        out = torch.vmap(lambda p, b, x: torch.func.functional_call(base, (p, b), (x,)),
                         in_dims=(0, 0, None))(params, buffers, video)  # no storage to key on: computed, not kept
        torch.testing.assert_close(out, torch.stack([m(video) for m in models]), rtol=1e-4, atol=1e-4)
    for name in FAMILIES:  # only the text tower converted (A3lign-DFER's MAT follows it)
        model = clipdfer.create_model(name).eval()
        model.text_encoder.double()
        with torch.no_grad():
            assert torch.isfinite(model(_video(model))).all(), name


def test_writes_through_data_bypass_version_counters_and_clear_text_cache_is_the_remedy():
    """``.data`` writes are invisible to autograd's version counters (documented in docs/finetuning.md)."""
    model = clipdfer.create_model("coop_test").eval()
    video = _video(model)
    with torch.no_grad():
        model(video)
        model.prompt_learner.ctx.data.mul_(0.0)
        model.clear_text_cache()
        torch.testing.assert_close(model(video), _fresh(model)(video))
