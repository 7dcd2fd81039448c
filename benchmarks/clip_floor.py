"""The CLIP floor of issue 28's real-time table: open_clip ViT-B/32's image tower in bf16 on 157 and 314 frames (batches
of 32, median of 3 runs), the frames predict encodes for a 19.6 s clip at 8 frames/s (CLIP-Guided DFER encodes each
twice). Usage: ``python benchmarks/clip_floor.py``."""
import time

import open_clip
import torch


def main() -> None:
    torch.manual_seed(0)
    tower = open_clip.create_model("ViT-B-32", pretrained=None).visual.eval().to(torch.bfloat16)
    frames = torch.randn(314, 3, 224, 224, dtype=torch.bfloat16)
    with torch.inference_mode():
        tower(frames[:8])  # warm-up
        for n in (157, 314):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                for i in range(0, n, 32):
                    tower(frames[i:min(n, i + 32)])
                times.append(time.perf_counter() - start)
            print(f"{n} frames: median {sorted(times)[1]:.2f} s")


if __name__ == "__main__":
    main()
