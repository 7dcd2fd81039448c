"""timm's head contract on every registered model: pre-logits, get_classifier, reset_classifier, group_matcher."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models import group_parameters

import clipdfer
from clipdfer.models import DFERModel, PromptHead
from helpers import random_video as _video, tiny as _tiny

ALL_MODELS = clipdfer.list_models()
# the families whose classes are their class texts and can change after construction
SET_CLASSES = [n for n in clipdfer.list_models("*_test") if not n.startswith(("pmfer", "a3lign"))]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_head_contract(name):
    model = _tiny(name).eval()
    assert isinstance(model, DFERModel) and model.family and name.startswith(model.family)
    video = _video(model, batch=3)
    with torch.no_grad():
        feats = model.forward_features(video)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        torch.testing.assert_close(model(video), logits)
        assert pre.shape == (3, model.head_hidden_size)  # timm: the pre-logits width
        assert feats.shape[-1] == model.num_features == model.clip_arch.embed_dim  # timm: forward_features' width
        classifier = model.get_classifier()
        torch.testing.assert_close(classifier(pre), logits)
    own = {id(p) for p in model.parameters()}
    assert {id(p) for p in classifier.parameters()} <= own  # a view of the model's own modules, not copies
    if model.has_prompt_head:
        assert isinstance(classifier, PromptHead)
        assert (classifier.in_features, classifier.out_features) == (model.head_hidden_size, model.num_classes)
    state = model.state_dict()
    assert all(k in state for k in model.classifier_keys), (model.classifier_keys, name)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_classifier_to_the_embedding(name, tmp_path):
    model = _tiny(name).eval()
    video = _video(model)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(video), pre_logits=True)
        model.reset_classifier(0)
        out = model(video)
    torch.testing.assert_close(out, pre)
    assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
    keys = set(model.state_dict())
    assert not any(k.startswith(("text_encoder.", "prompt_learner.", "biehpro.", "mat", "text_dynamic.")) for k in keys)
    assert model.classifier_keys == ()
    model.save_pretrained(str(tmp_path / "encoder"))
    same = clipdfer.create_model(f"local-dir:{tmp_path / 'encoder'}").eval()
    with torch.no_grad():
        torch.testing.assert_close(same(video), out)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_classifier_to_a_linear_head_trains_saves_and_loads(name, tmp_path):
    model = _tiny(name)
    if model.has_prompt_head:
        # ambiguous for a text-prompt head: says the equivalent (a family whose classes are fixed at construction names
        # create_model's class_names)
        equivalent = "set_classes" if model._can_set_classes else r"create_model\(name, class_names=\[\.\.\.\]\)"
        with pytest.raises(ValueError, match=equivalent):
            model.reset_classifier(5)
    model.reset_classifier(5, linear=True)
    assert isinstance(model.get_classifier(), torch.nn.Linear) and model.get_classifier().in_features == \
        model.head_hidden_size
    assert model.num_classes == 5 and len(model.class_names) == 5
    assert set(model.classifier_keys) == {"head.weight", "head.bias"} <= set(model.state_dict())
    video = _video(model)
    loss = model.training_losses(video, torch.tensor([0, 4]))["total"]
    loss.backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "head.weight" in trainable
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.save_pretrained(str(tmp_path / "m"))
    same = clipdfer.create_model(f"local-dir:{tmp_path / 'm'}").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(same(video), model(video))
    assert same.class_names == model.class_names and same.num_classes == 5


@pytest.mark.parametrize("name", SET_CLASSES)
def test_reset_classifier_with_class_names_keeps_the_text_head(name):
    model = clipdfer.create_model(name).eval()
    if name.startswith("dferclip"):  # class-specific contexts: as many classes as were learned
        names = ["anger", "anxiety", "contempt", "disappointment", "disgust", "fear", "helplessness"]
    else:
        names = ["calm", "joy", "pain"]
    model.reset_classifier(len(names), class_names=names)
    assert model.has_prompt_head and model.class_names == tuple(names)
    with torch.no_grad():
        assert model(_video(model)).shape == (2, len(names))
    with pytest.raises(ValueError, match="2 class_names"):
        model.reset_classifier(3, class_names=["x", "y"])


def test_set_classes_after_the_text_head_was_replaced_is_an_error():
    model = clipdfer.create_model("coop_test")
    model.reset_classifier(3, linear=True)
    with pytest.raises(RuntimeError, match="needs the text-prompt head"):
        model.set_classes(["a", "b"])


@pytest.mark.parametrize("value", [-1, 2.0, True])
def test_reset_classifier_rejects_bad_counts(value):
    with pytest.raises(ValueError, match="num_classes="):
        clipdfer.create_model("clipdfer_test").reset_classifier(value)


def test_reset_classifier_takes_timms_global_pool_only_as_none():
    model = clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0)
    with pytest.raises(ValueError, match="global_pool='avg'.*pools frames as its architecture"):
        model.reset_classifier(3, "avg")
    model.reset_classifier(3, None)
    assert model.num_classes == 3


def test_create_model_num_classes_follows_timm():
    m = clipdfer.create_model("dferclip_test", num_classes=0).eval()
    with torch.no_grad():
        assert m(_video(m)).shape == (2, m.head_hidden_size)
    assert clipdfer.create_model("dferclip_test", num_classes=7).num_classes == 7  # the classes it has
    with pytest.raises(ValueError, match=r"class_names=\[\.\.\.\] with 3 names.*reset_classifier\(3, linear=True\)"):
        clipdfer.create_model("dferclip_test", num_classes=3)
    linear = clipdfer.create_model("clipdfer_test", text_head=False, biehpro_depth=0, num_classes=7)
    assert isinstance(linear.get_classifier(), torch.nn.Linear)


def test_pre_logits_of_sequence_heads_against_their_formulas():
    """A3lign-DFER's per-step similarity and PMFER's frame-averaged logits are linear in the pre-logits."""
    a3 = clipdfer.create_model("a3lign_test").eval()
    video = _video(a3)
    with torch.no_grad():
        seq = a3.forward_features(video)  # (B, T, D)
        text_seq = a3.text_dynamic(a3.sentence_features())  # (C, T, D)
        ref = 100 * torch.einsum("btd,ctd->bc", F.normalize(seq, dim=-1), F.normalize(text_seq, dim=-1)) / seq.shape[1]
        torch.testing.assert_close(a3(video), ref)
        assert a3.head_hidden_size == a3.num_frames * a3.clip_arch.embed_dim and seq.shape[-1] == a3.num_features
    pm = clipdfer.create_model("pmfer_test").eval()
    video = _video(pm)
    with torch.no_grad():
        frames = F.normalize(pm.encode_frames(video), dim=-1)  # (B, T, D)
        ref = (100 * frames @ pm.text_features().t()).mean(dim=1)
        torch.testing.assert_close(pm(video), ref)


@pytest.mark.parametrize("name", ["clipdfer_test", "dferclip_test", "pmfer_test"])
def test_group_matcher_orders_layers_for_layer_decay(name):
    model = clipdfer.create_model(name)
    layers = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    depth = len(model.image_encoder.blocks)
    assert layers["image_encoder.visual.conv1.weight"] == layers["image_encoder.visual.class_embedding"] == 0
    for i in range(depth):
        assert layers[f"image_encoder.visual.transformer.resblocks.{i}.attn.in_proj_weight"] == i + 1
    assert layers["image_encoder.visual.proj"] == depth  # with the last block, as timm's final norm
    head = max(layers.values())
    assert head == depth + 1
    if name == "clipdfer_test":  # new modules (random init) keep the full rate, InterFIT's inside the tower too
        assert layers["image_encoder.interaction.0.token.weight"] == layers["msta.fc_v.weight"] == head
        assert layers["biehpro.alpha"] == head


def test_weights_state_and_notice(tmp_path):
    from clipdfer.layers import build_open_clip
    model = clipdfer.create_model("clipdfer_test")
    assert model.weights == "random" and model.weights_notice() == "random weights"
    path = str(tmp_path / "open_clip.safetensors")
    save_file({k: v.contiguous() for k, v in build_open_clip("test").state_dict().items()}, path)
    assert clipdfer.create_model("clipdfer_test", checkpoint_path=path).weights == "pretrained"
    zs = clipdfer.create_model("clip_zeroshot_test", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    assert zs.weights == "pretrained" and zs.weights_notice() is None  # zero-shot: meaningful as it is
    full = str(tmp_path / "full.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, full)
    tuned = clipdfer.create_model("clipdfer_test", checkpoint_path=full)
    # a bare state dict does not say what it is: never guessed fine-tuned from its keys (issue 19)
    assert tuned.weights == "loaded" and not tuned.is_finetuned and "unknown training" in tuned.weights_notice()
    tuned.weights = "finetuned"  # the user knows
    assert tuned.is_finetuned and tuned.weights_notice() is None
    with pytest.raises(ValueError, match="weights='tuned': expected one of"):
        tuned.weights = "tuned"
    tuned.save_pretrained(str(tmp_path / "saved"))
    assert clipdfer.create_model(f"local-dir:{tmp_path / 'saved'}").weights == "finetuned"
    assert clipdfer.create_model("clipdfer_test", checkpoint_path=str(tmp_path / "saved" / "model.safetensors")
                                 ).weights == "finetuned"  # the file records it
    tuned.reset_classifier(3, linear=True)  # a new, untrained classifier on fine-tuned features
    assert tuned.weights == "pretrained" and tuned.weights_notice()
    zs.reset_classifier(3, linear=True)  # zero-shot CLIP is meaningful through its text head only
    assert zs.weights_notice()


def test_declared_checkpoint_format_is_checked(tmp_path):
    model = clipdfer.create_model("clipdfer_test")
    path = str(tmp_path / "full.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    with pytest.raises(ValueError, match="not an open_clip CLIP checkpoint.*checkpoint_format='open_clip'"):
        clipdfer.create_model("clipdfer_test", pretrained=True,
                              pretrained_cfg_overlay=dict(file=path, checkpoint_format="open_clip"))
    # a file named without its format is told from its keys
    loaded = clipdfer.create_model("clipdfer_test", pretrained=True, pretrained_cfg_overlay=dict(file=path))
    assert loaded.weights == "pretrained"  # the cfg says its weights are not fine-tuned


def test_a_random_model_through_load_state_dict_is_not_published_as_fine_tuned(tmp_path, caplog):
    from clipdfer.models._hub import model_card
    model = clipdfer.create_model("clipdfer_test")
    model.load_state_dict(clipdfer.create_model("clipdfer_test").state_dict())  # still random weights
    assert model.weights == "loaded" and not model.is_finetuned
    with caplog.at_level("WARNING"):
        model.save_pretrained(str(tmp_path / "a"))
    assert "unknown training" in caplog.text and "finetuned=True" in caplog.text
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["weights"] == "loaded" and config["pretrained_cfg"]["finetuned"] is False
    assert "not known to be fine-tuned" in model_card(config, "me/a")
    again = clipdfer.create_model(f"local-dir:{tmp_path / 'a'}")
    assert again.weights == "loaded" and again.weights_notice()
    # a random model saved as such stays random; an explicit finetuned=True is recorded
    clipdfer.create_model("clipdfer_test").save_pretrained(str(tmp_path / "r"))
    assert clipdfer.create_model(f"local-dir:{tmp_path / 'r'}").weights == "random"
    model.save_pretrained(str(tmp_path / "f"), finetuned=True)
    assert clipdfer.create_model(f"local-dir:{tmp_path / 'f'}").weights == "finetuned"
    # a tag whose cfg says fine-tuned, built without its weights, is random, and saved as random
    tagged = clipdfer.create_model("dferclip_test", pretrained=False,
                                   pretrained_cfg_overlay=dict(finetuned=True))
    assert tagged.weights == "random"
    tagged.save_pretrained(str(tmp_path / "t"))
    assert json.loads((tmp_path / "t" / "config.json").read_text())["pretrained_cfg"]["finetuned"] is False


def test_the_files_own_record_wins_over_a_config_that_says_fine_tuned(tmp_path):
    model = clipdfer.create_model("clipdfer_test")
    model.save_pretrained(str(tmp_path / "m"))  # random, recorded so in model.safetensors
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["pretrained_cfg"]["finetuned"] = True  # an edited (or mistaken) config
    path.write_text(json.dumps(config))
    assert clipdfer.create_model(f"local-dir:{tmp_path / 'm'}").weights == "random"


def test_timm_none_kwargs_are_dropped_and_meaningful_nones_kept():
    model = clipdfer.create_model("clipdfer_test", global_pool=None, drop_rate=None, drop_path_rate=None)
    assert model.num_classes == 7
    cocoop = clipdfer.create_model("cocoop_test", ctx_init=None)  # None means something here: random contexts
    assert cocoop.prompt_learner.ctx_init is None


@pytest.mark.parametrize("prefixes", [("module.",), ("_orig_mod.",), ("module.", "_orig_mod."),
                                      ("_orig_mod.", "module.")])
def test_checkpoints_of_wrapped_models_load(tmp_path, prefixes):
    """Saved from DDP / DataParallel (module.) or torch.compile (_orig_mod.), in any order."""
    model = clipdfer.create_model("clipdfer_test").eval()
    path = str(tmp_path / "wrapped.safetensors")
    save_file({"".join(prefixes) + k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded = clipdfer.create_model("clipdfer_test", checkpoint_path=path).eval()
    video = _video(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video), model(video))


def test_the_weights_state_follows_the_weights_and_nothing_else_sets_it(tmp_path):
    """Issue 26, item 3: the builder, the trainer and the user record what the weights are; any later change of them
    shows as 'loaded' (unknown), a new head as 'pretrained'; moves, casts and copies keep the state."""
    import copy
    import pickle
    model = clipdfer.create_model("clipdfer_test")
    assert model.weights == "random"
    model.weights = "finetuned"  # e.g. your own fine-tuned weights, loaded by hand
    model.to(torch.float64).float()
    assert model.weights == "finetuned"
    assert copy.deepcopy(model).weights == "finetuned" and pickle.loads(pickle.dumps(model)).weights == "finetuned"
    copied = copy.deepcopy(model)
    with torch.no_grad():
        copied.msta.fc_v.weight.add_(1.0)  # the copy's own weights: the original is unchanged
    assert copied.weights == "loaded" and model.weights == "finetuned"
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.training_losses(torch.randn(2, 8, 3, 32, 32), torch.tensor([0, 1]))["total"].backward()
    optimizer.step()  # your own training loop: what they are now is not known ("finetuned" was stale before)
    assert model.weights == "loaded" and "unknown training" in model.weights_notice()
    model.weights = "finetuned"
    model.reset_classifier(0)  # the embedding: what is left keeps its state
    assert model.weights == "finetuned"
    by_hand = type(model)(clip_arch="test", num_frames=8)  # not built by create_model: nothing says what it is
    assert by_hand.weights == "loaded"


def test_the_weights_record_lets_torch_swap_and_assign_tensors():
    """The record held weakrefs, so torch.__future__'s swap-on-conversion refused to move the model ("Couldn't swap")
    and load_state_dict failed; assigned tensors now read as what they are: unknown."""
    model = clipdfer.create_model("clipdfer_test")
    model.weights = "finetuned"
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.to(torch.float64).float()
        model.load_state_dict(clipdfer.create_model("clipdfer_test").state_dict())
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)
    assert model.weights == "loaded"
    tuned = clipdfer.create_model("clipdfer_test")
    tuned.weights = "finetuned"
    tuned.load_state_dict(clipdfer.create_model("clipdfer_test").state_dict(), assign=True)  # other tensors
    assert tuned.weights == "loaded"


@pytest.mark.parametrize("name", ["clipdfer_test", "clip_zeroshot_test", "coop_test", "cocoop_test"])
def test_classes_whose_prompts_tokenize_the_same_are_refused(name):
    """Issue 27, item 5: "Happy" / "happy", "happy" / "happy ", NFC / NFD spellings were accepted and got identical
    logits, so one of them could never win."""
    model = clipdfer.create_model(name)
    for names in (["Happy", "happy", "sad"], ["happy", "happy ", "sad"], ["caf\u00e9", "cafe\u0301", "sad"]):
        with pytest.raises(ValueError, match="tokenize the same") as e:
            model.set_classes(names)
        assert names[0] in str(e.value) and names[1].rstrip() in str(e.value)
        with pytest.raises(ValueError, match="tokenize the same"):
            clipdfer.create_model(name, class_names=names)
    model.set_classes(["happy", "sad"])  # distinct ones still work
    assert model.num_classes == 2


def test_the_cfg_follows_the_classes(tmp_path):
    """Issue 27, item 6: after class_names=[3 names] or set_classes, pretrained_cfg still said DFEW's 7 classes (the
    label order users read there), and config.json recorded dataset 'dfew' and the tag's notes for a 3-class model."""
    import json
    for model in (clipdfer.create_model("clipdfer_test", class_names=["calm", "joy", "rage"]),
                  clipdfer.create_model("clipdfer_test")):
        if model.num_classes == 7:
            assert model.pretrained_cfg.dataset == "dfew"
            model.set_classes(["calm", "joy", "rage"])
        cfg = model.pretrained_cfg
        assert cfg.class_names == cfg["label_names"] == ("calm", "joy", "rage") and cfg.num_classes == 3
        assert cfg.dataset is None and "happiness" in cfg.notes and cfg.architecture == "clipdfer_test"
        model.save_pretrained(str(tmp_path / "m"))
        saved = json.loads((tmp_path / "m" / "config.json").read_text())
        assert saved["pretrained_cfg"]["dataset"] is None and saved["label_names"] == ["calm", "joy", "rage"]
        assert clipdfer.create_model(f"local-dir:{tmp_path / 'm'}").pretrained_cfg.class_names == cfg.class_names
    model.reset_classifier(0)
    assert model.pretrained_cfg.num_classes == 0 and model.pretrained_cfg.classifier == "head"
