"""Class texts longer than the text encoder's context are an error, not a silent cut (issue 19, item 4)."""

import dataclasses

import pytest
import torch

import clipdfer
from clipdfer.layers import CLIP_ARCHS, tokenize
from clipdfer.layers.clip import token_counts

SHORT_CONTEXT = dataclasses.replace(CLIP_ARCHS["test"], context_length=16)
# two 66-token descriptions that differ only in their last words
_COMMON = " ".join(["a face with raised eyebrows and wide open eyes"] * 7)
LONG = [_COMMON + " and a smile", _COMMON + " and a pout"]


def test_token_counts_are_the_tokenizers():
    counts = token_counts(LONG + ["happiness"])
    assert counts[:2] == [66, 66] and counts[2] == 1
    full = tokenize(["happiness"], 77)[0]
    assert int((full != 0).sum()) == counts[2] + 2  # [SOS] text [EOS]


def test_tokenize_names_each_long_text_and_the_budget():
    with pytest.raises(ValueError) as info:
        tokenize(["ok", *LONG], 16)
    msg = str(info.value)
    assert "2 of 3 texts do not fit" in msg and msg.count("(66 tokens)") == 2 and "the budget is 14 tokens" in msg
    assert "truncate=True" in msg
    cut = tokenize(LONG, 16, truncate=True)
    assert torch.equal(cut[0], cut[1]) and cut.shape == (2, 16)  # what truncation does to them: the same prompt


def test_dferclip_long_descriptions_fail_at_construction_with_the_learned_context_in_the_budget():
    names = ["happiness", "sadness"]
    with pytest.raises(ValueError) as info:
        clipdfer.create_model("dferclip_test", clip_arch=SHORT_CONTEXT, class_names=names, class_texts=LONG)
    msg = str(info.value)
    assert "2 of 2 class texts do not fit" in msg and msg.count("(66 tokens)") == 2
    assert "the budget is 6 tokens (context length 16 - 2 for [SOS] and [EOS] - 8 learned context vectors)" in msg
    # opting in cuts them to one prompt, which would give identical probabilities: refused too (issue 27, item 5)
    with pytest.raises(ValueError, match="tokenize the same .*truncate=True cut them"):
        clipdfer.create_model("dferclip_test", clip_arch=SHORT_CONTEXT, class_names=names, class_texts=LONG,
                              truncate=True, class_specific_contexts=False)


# 132 tokens: longer than any budget of the 77-token context
VERY_LONG = [_COMMON + " " + _COMMON + " and a smile", _COMMON + " " + _COMMON + " and a pout"]


@pytest.mark.parametrize("name,how", [
    ("clipdfer_test", "class_names"),
    ("dferclip_test", "class_texts"),
    ("clip_zeroshot_test", "words"),
    ("coop_test", "words"),
    ("cocoop_test", "words"),
])
def test_set_classes_checks_before_changing_anything(name, how):
    extra = {"class_specific_contexts": False} if name == "dferclip_test" else {}
    model = clipdfer.create_model(name, **extra).eval()
    video = torch.randn(1, model.num_frames, 3, 32, 32)
    with torch.no_grad():
        before = model(video)
    names, kwargs = (VERY_LONG, {}) if how == "class_names" else (["happiness", "sadness"], {how: VERY_LONG})
    with pytest.raises(ValueError, match=r"of \d+ [\w ]+ do not fit the text encoder: .*\(1[23]\d tokens\)"):
        model.set_classes(names, **kwargs)
    assert model.num_classes == 7
    with torch.no_grad():
        torch.testing.assert_close(model(video), before)
    # the explicit opt-in cuts both texts to one prompt: two classes that could never be told apart (issue 27, item 5)
    with pytest.raises(ValueError, match="tokenize the same .*truncate=True cut them"):
        model.set_classes(names, truncate=True, **kwargs)
    assert model.num_classes == 7
    model.set_classes([names[0], "sad"], truncate=True, **({how: [kwargs[how][0], "sad"]} if kwargs else {}))
    assert model.num_classes == 2 and model(video).shape == (1, 2)


def test_pmfer_and_text_encoder_check_too():
    with pytest.raises(ValueError, match=r"'happiness face, a face with .* \.\.\. .*and a smile\.' \(70 tokens\)"):
        clipdfer.create_model("pmfer_test", clip_arch=SHORT_CONTEXT, class_names=["happiness"],
                              phrases={"happiness": [LONG[0]]})
    model = clipdfer.create_model("clipdfer_test")
    with pytest.raises(ValueError, match=r"1 of 1 text does not fit the text encoder: .*\(80 tokens\)"):
        model.text_encoder.encode([" ".join(["smile"] * 80)])
    assert model.text_encoder.encode([" ".join(["smile"] * 80)], truncate=True).shape == (1, 32)


def test_truncate_travels_with_the_saved_config(tmp_path):
    model = clipdfer.create_model("clipdfer_test", class_names=LONG[:1] + ["calm"], truncate=True, clip_arch="test")
    model.save_pretrained(tmp_path / "m")
    again = clipdfer.create_model(f"local-dir:{tmp_path / 'm'}")
    assert again.truncate is True and again.class_names == model.class_names


def test_the_message_keeps_each_texts_end_and_a_context_too_long_for_any_text():
    with pytest.raises(ValueError) as info:
        tokenize(LONG, 16)
    msg = str(info.value)
    assert "and a smile' (66 tokens)" in msg and "and a pout' (66 tokens)" in msg  # told apart by their ends
    with pytest.raises(ValueError, match="16 learned context vectors leave no room for class texts in a 16-token "
                                         r"context .* use at most 13 context vectors \(n_ctx\)"):
        clipdfer.create_model("coop_test", clip_arch=SHORT_CONTEXT, n_ctx=16)


def _set(name, **kwargs):
    return lambda: clipdfer.create_model(name).set_classes(**kwargs)


@pytest.mark.parametrize("call,match", [
    (lambda: clipdfer.create_model("clipdfer_test", class_names="joy"), r"class_names='joy': expected a list"),
    (_set("clipdfer_test", class_names="happy"), r"class_names='happy': expected a list of strings, e.g. \['happy'\]"),
    (_set("clipdfer_test", class_names=["joy", "joy"]), r"\['joy'\] appear more than once"),
    (_set("clip_zeroshot_test", class_names=[1, 2]), r"\(1 is not one\)"),
    (_set("clipdfer_test", class_names=["joy", "pain"], prompt_template="a face."), r"one '\{\}' for the class"),
    (_set("clipdfer_test", class_names=["joy", "pain"], truncate="false"), r"truncate='false': expected True or False"),
    (lambda: clipdfer.create_model("coop_test", truncate="no"), r"truncate='no'"),
    (_set("coop_test", class_names=["joy", "pain"], words=["happy"]), "1 words for 2 classes"),
    (lambda: clipdfer.create_model("coop_test", class_names=["joy", "pain"], words=["happy"]), "1 words for 2"),
    (lambda: clipdfer.create_model("dferclip_test", class_specific_contexts=False).set_classes(
        ["joy", "pain"], class_texts=["x"]), "1 class_texts for 2 class_names"),
    (lambda: clipdfer.create_model("pmfer_test", class_names=["happiness"], phrases={"happiness": "smile"}),
     r"phrases\['happiness'\]='smile': expected a list"),
])
def test_malformed_class_inputs_are_errors_not_other_classes(call, match):
    with pytest.raises(ValueError, match=match):
        call()
