"""FLOPs (as multiply-accumulates, G) and parameters of clipdfer models, and the CLIP-Guided DFER paper's FLOPs column.

    python benchmarks/flops.py clipdfer_vitb32_dfew dferclip_vitb32_dfew      # full count and parameters
    python benchmarks/flops.py --paper-table --json paper_table.json          # Tables 2-4 in the paper's convention

Counts run on the meta device (no memory, no compute); see ``clipdfer.profiling`` for the two conventions. "G" is
1e9 multiply-accumulates, the unit the paper's FLOPs column uses (thop's).
"""

import argparse
import json

import torch

import clipdfer
from clipdfer.profiling import count_macs, count_params

# (row, paper GFLOPs, model arguments), Tables 2-4 of Zhang et al., IJCB 2024, ViT-B/32, 8 frames
PAPER_ROWS = [
    ("Baseline", 23.58, dict(interfit=False, msta=False, biehpro_depth=0)),
    ("+InterFIT", 24.65, dict(msta=False, biehpro_depth=0)),
    ("+InterFIT +MSTA", 24.65, dict(biehpro_depth=0)),
    ("full (M = 2)", 24.71, dict()),
    ("w/o text", 24.65, dict(text_head=False, biehpro_depth=0)),
    ("M = 1", 24.68, dict(biehpro_depth=1)),
    ("M = 3", 24.74, dict(biehpro_depth=3)),
    ("M = 4", 24.77, dict(biehpro_depth=4)),
    ("M = 5", 24.80, dict(biehpro_depth=5)),
]


def measure(name: str, batch: int = 1, **kwargs):
    with torch.device("meta"):
        model = clipdfer.create_model(name, **kwargs)
    model.to("meta")  # token-id buffers are made on the CPU
    size = model.pretrained_cfg.input_size[-1]
    video = torch.empty(batch, model.num_frames, 3, size, size, device="meta")
    return model, count_macs(model, video, "full") / 1e9, count_macs(model, video, "paper") / 1e9


def paper_table():
    rows = []
    for config, paper, kwargs in PAPER_ROWS:
        _, full, paper_conv = measure("clipdfer_vitb32_dfew", **kwargs)
        rows.append({"config": config, "paper_gflops": paper, "ours_paper_convention_gflops": round(paper_conv, 3),
                     "ours_full_gflops": round(full, 3)})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="model names or wildcards")
    p.add_argument("--paper-table", action="store_true")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    rows = []
    if args.paper_table:
        rows = paper_table()
        print(f"{'config':<18} {'paper G':>8} {'ours (paper conv.) G':>21} {'diff':>7} {'ours (full) G':>14}")
        for r in rows:
            diff = r["ours_paper_convention_gflops"] - r["paper_gflops"]
            print(f"{r['config']:<18} {r['paper_gflops']:>8.2f} {r['ours_paper_convention_gflops']:>21.3f} "
                  f"{diff:>+7.3f} {r['ours_full_gflops']:>14.3f}")
    names = [n for pattern in args.models for n in (clipdfer.list_models(pattern) or [pattern])]
    for name in names:
        model, full, paper_conv = measure(name)
        params = count_params(model)
        row = {"model": name, "num_frames": model.num_frames, "full_gmacs": round(full, 3),
               "paper_convention_gmacs": round(paper_conv, 3), "params_m": round(params["total"] / 1e6, 2),
               "trainable_params_m": round(params["trainable"] / 1e6, 2)}
        rows.append(row)
        print(f"{name:<28} T={model.num_frames:<3} full {full:8.2f} G  paper-convention {paper_conv:8.2f} G  "
              f"params {row['params_m']:8.1f} M (trainable {row['trainable_params_m']:.2f} M)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
