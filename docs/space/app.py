"""A Hugging Face Space running the clipdfer demo (docs/demo.md): copy this file, requirements.txt and README.md into a
new Gradio Space. The Space runs ``python app.py``; environment variables (the Space's settings) choose the model:

    CLIPDFER_MODEL        a registered model (default: predict's, DFER-CLIP fine-tuned on FERV39k)
    CLIPDFER_PRETRAINED   0 for random weights (a pipeline check; the page says the probabilities mean nothing)
"""

import os

from clipdfer.app import Demo, UploadLimits


def make_demo() -> Demo:
    """The Space's demo: the model from the environment, smaller limits than a local demo's (a shared CPU)."""
    return Demo(os.environ.get("CLIPDFER_MODEL") or None, os.environ.get("CLIPDFER_PRETRAINED", "1") != "0",
                limits=UploadLimits(max_mb=50, max_seconds=60, max_videos=2))


if __name__ == "__main__":
    # a Space serves on every interface of its container, port 7860; share links are off (Spaces refuse them)
    make_demo().launch(host="0.0.0.0", port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
