"""DFER-CLIP: our model against the official implementation on the same weights (parity and CPU time).

    python benchmarks/bench_dferclip.py --official-repo PATH/TO/DFER-CLIP [--runs 20] [--classes 7]

``--official-repo`` is a checkout of github.com/zengqunzhao/DFER-CLIP; its code is imported from there at run time
(clipdfer ships none of it). The script builds the official ``GenerateModel`` around a randomly initialised
ViT-B/32 CLIP (OpenAI layout, through the official ``build_model``), saves it the way the official training script
does (``DataParallel`` keys, a pickled object of a class of the script), loads that file with
``clipdfer.create_model("dferclip_vitb32_...", checkpoint_path=...)``, and reports:

- the largest absolute logit difference on the same clips (logits are cos / 0.01);
- the CPU eval forward time of both at T = 16 (official: re-encodes its prompts every call; ours: cached), and the
  ratio ours / official. Runs alternate between the two; medians.

Without ``--official-repo`` it compares against our own model with ``cache_text=False``, which re-encodes the
prompts every call as the official code does.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types

import torch

import clipdfer


class RecorderMeter:  # the official training script pickles an object of a class of this name next to the weights
    def __init__(self, epochs=50):
        self.total_epoch = epochs
        self.epoch_losses = [[0.0, 0.0]] * epochs


def _official_model(repo: str, num_classes: int):
    import open_clip
    import packaging.version
    sys.modules.setdefault("pkg_resources", types.SimpleNamespace(packaging=packaging))  # their clip.py imports it
    sys.path[:0] = [repo, os.path.join(repo, "models")]
    from clip.model import build_model
    from models.Generate_Model import GenerateModel
    from models.Text import class_descriptor_7, class_descriptor_11

    state = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).state_dict()
    state = {k: v for k, v in state.items() if k != "logit_bias"}
    clip_model = build_model(state).float().eval()  # as clip.load(..., device="cpu") does
    args = argparse.Namespace(contexts_number=8, class_specific_contexts="True", class_token_position="end",
                              temporal_layers=1, load_and_tune_prompt_learner="False")
    texts = class_descriptor_7 if num_classes == 7 else class_descriptor_11
    return GenerateModel(input_text=texts, clip_model=clip_model, args=args).eval()


def _median_times(fns, runs):
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-repo", help="checkout of github.com/zengqunzhao/DFER-CLIP")
    parser.add_argument("--classes", type=int, choices=(7, 11), default=7)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    name = "dferclip_vitb32_dfew" if args.classes == 7 else "dferclip_vitb32_mafw"
    video = torch.rand(args.batch_size, 16, 3, 224, 224)  # the official pipeline feeds [0, 1] frames

    if args.official_repo:
        reference = _official_model(args.official_repo, args.classes)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "DFEW-set1-model_best.pth")
            torch.save({"epoch": 50, "state_dict": {"module." + k: v for k, v in reference.state_dict().items()},
                        "best_acc": torch.tensor(71.0), "optimizer": {}, "recorder": RecorderMeter()}, path)
            model = clipdfer.create_model(name, checkpoint_path=path).eval()
        label = "official DFER-CLIP"
    else:
        model = clipdfer.create_model(name).eval()
        reference = clipdfer.create_model(name, cache_text=False).eval()
        reference.load_state_dict(model.state_dict())
        label = "clipdfer with cache_text=False"

    with torch.inference_mode():
        ours, ref = model(video), reference(video)
        diff = (ours - ref).abs().max().item()
        for _ in range(2):
            model(video), reference(video)
        ms = _median_times({"ours": lambda: model(video), "reference": lambda: reference(video)}, args.runs)
    result = {"model": name, "reference": label, "batch_size": args.batch_size, "num_frames": 16,
              "max_abs_logit_diff": diff, "ours_ms": ms["ours"], "reference_ms": ms["reference"],
              "ratio": ms["ours"] / ms["reference"], "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"{name} vs {label}: max |logit diff| {diff:.2e} (logits = cos / 0.01)")
    print(f"CPU eval forward, B={args.batch_size} T=16 fp32, {result['threads']} threads: ours {ms['ours']:.1f} ms, "
          f"reference {ms['reference']:.1f} ms, ratio {result['ratio']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
