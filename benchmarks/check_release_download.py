"""A full-size DFER-CLIP release through ``pretrained=True``: download (loopback), check, convert, cache, reload.

    python benchmarks/check_release_download.py

Builds ``dferclip_vitb32_dfew`` with random weights, saves it in the official release format (the tests' writer,
``tests/test_dferclip.py``), serves the file from a loopback HTTP server and loads it as
``dferclip_vitb32_dfew.dfew_fold1`` with ``pretrained_cfg_overlay=dict(url=...)``, twice (the second from the cache),
into a fresh cache. Prints the file size, both load times and the largest logit difference to the source model.
Needs about 3 GB of free disk under the temporary directory and gdown.
"""

import os
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import clipdfer  # noqa: E402
from hub_server import FileServer  # noqa: E402
from test_dferclip import save_official  # noqa: E402


def main() -> int:
    os.environ.pop("HF_HUB_OFFLINE", None)
    work = tempfile.mkdtemp(prefix="clipdfer-release-")
    try:
        source = clipdfer.create_model("dferclip_vitb32_dfew").eval()
        path = os.path.join(work, "DFEW-0000-set1-model_best.pth")
        save_official(source, path)
        print(f"release file: {os.path.getsize(path) / 1e6:.1f} MB")
        with FileServer() as server:
            with open(path, "rb") as f:
                server.files[os.path.basename(path)] = f.read()
            overlay = dict(url=server.url(os.path.basename(path)))
            times, models = [], []
            for _ in range(2):
                start = time.perf_counter()
                models.append(clipdfer.create_model("dferclip_vitb32_dfew.dfew_fold1", pretrained=True,
                                                    cache_dir=os.path.join(work, "cache"),
                                                    pretrained_cfg_overlay=overlay).eval())
                times.append(time.perf_counter() - start)
            print(f"first load (download, check, convert, cache): {times[0]:.2f} s; from the cache: {times[1]:.2f} s; "
                  f"GET requests: {server.count()}; weights: {models[0].weights}")
        video = torch.rand(1, 16, 3, 224, 224)
        with torch.no_grad():
            ref = source(video)
            print("max |logit difference| to the source model:",
                  max((m(video) - ref).abs().max().item() for m in models))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
