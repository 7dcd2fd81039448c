"""How far bf16 weights move predict's results from fp32: top-1 agreement over windows and the largest probability
difference, per family, on the sample clip and clips made from it.

    python benchmarks/check_dtype_agreement.py --markdown agreement.md

Each model is built twice with the random weights of ``--no-pretrained`` (seed 0; CLIP's own weights need a download),
once cast to bf16, and both run through :class:`clipdfer.inference.Predictor` on the same clips: the sample clip
(24 frames at 8 frames/s with one real face), it mirrored, a centre crop of 60% of each side scaled back to the
frame's size, at double speed (every other frame) and at half speed (each frame twice). Faces are found by the
default detector, the same boxes for both dtypes. A window counts as agreeing when both dtypes rank the same class
first; where they do not, the table gives fp32's lead of its first class over its second (the largest such lead):
random weights give near-uniform probabilities, so a tiny difference can reorder them.
"""

import argparse
import json
from typing import Dict, List

import torch
import torch.nn.functional as F

MODELS = ("dferclip_vitb32_ferv39k", "clip_zeroshot_vitb32", "clipdfer_vitb32_ferv39k", "a3lign_vitb32_ferv39k",
          "pmfer_vitb16_ferv39k", "coop_vitb32_ferv39k", "cocoop_vitb32_ferv39k")


def clips() -> Dict[str, torch.Tensor]:
    """name -> (T, 3, H, W) uint8 frames, all at 8 frames/s."""
    from clipdfer.data.io import read_video
    from clipdfer.inference import sample_clip_path
    video = read_video(sample_clip_path())  # (24, 3, H, W) uint8
    h, w = video.shape[-2:]
    top, left = int(0.2 * h), int(0.2 * w)
    crop = video[..., top:h - top, left:w - left].float()
    crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False).round().clamp(0, 255).byte()
    return {"sample": video, "mirrored": video.flip(-1), "centre crop": crop, "2x speed": video[::2],
            "0.5x speed": video.repeat_interleave(2, dim=0)}


def compare(model: str, videos: Dict[str, torch.Tensor]) -> Dict:
    from clipdfer.inference import Predictor, ReadSettings
    reading = ReadSettings(fps=0, folder_fps=8.0)
    runs = {dtype: Predictor(model, pretrained=False, dtype=dtype, device="cpu") for dtype in ("fp32", "bf16")}
    windows = agree = 0
    max_diff = margin = 0.0  # margin: fp32's lead of its first class over its second, the largest where they disagree
    for name, video in videos.items():
        ref, low = (runs[d].run(video, reading) for d in ("fp32", "bf16"))
        for a_face, b_face in zip(ref.faces, low.faces):
            for a, b in zip(a_face.windows, b_face.windows):
                windows += 1
                agree += a.top[0] == b.top[0]
                if a.top[0] != b.top[0]:
                    first, second = sorted(a.probs.values())[-2:][::-1]
                    margin = max(margin, first - second)
                max_diff = max(max_diff, max(abs(a.probs[c] - b.probs[c]) for c in a.probs))
    return {"model": model, "clips": len(videos), "windows": windows, "top1_agreement": round(agree / windows, 4),
            "max_abs_prob_diff": round(max_diff, 4), "max_fp32_margin_where_they_disagree": round(margin, 4),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def markdown(rows: List[Dict]) -> str:
    lines = ["| model | windows | top-1 agreement | max abs probability difference | fp32's largest top-1 lead where "
             "they disagree |", "|---|---|---|---|---|"]
    lines += [f"| `{r['model']}` | {r['windows']} | {r['top1_agreement']:.4f} | {r['max_abs_prob_diff']:.4f} | "
              f"{r['max_fp32_margin_where_they_disagree']:.4f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    args = p.parse_args(argv)
    videos = clips()
    rows = []
    for model in args.models:
        rows.append(compare(model, videos))
        print(json.dumps(rows[-1]), flush=True)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(rows) + "\n")
    return rows


if __name__ == "__main__":
    main()
