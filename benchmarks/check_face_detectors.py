"""YuNet (OpenCV's FaceDetectorYN) against OpenCV's Haar cascade on scikit-image's test images: the table in docs/predict.md.

    pip install scikit-image          # its bundled test images; not a clipdfer dependency
    python benchmarks/check_face_detectors.py

Cases: the astronaut photo upright, tilted by up to 45 degrees, shrunk until her face is 16-24 px wide, with mouth
and chin covered; the cameraman's three-quarter face; and every bundled image without a face, where any box with a
score of at least 0.6 is a false one. Scores are YuNet's (0-1); the Haar cascade has none.
"""

import json
import warnings
from typing import Dict, List

import numpy as np
from PIL import Image

from clipdfer.faces import HaarDetector, YuNetDetector

# the face-free images scikit-image bundles (its others need a download)
FACE_FREE = ["coffee", "chelsea", "cat", "coins", "horse", "rocket", "moon", "page", "text", "clock", "brick", "grass",
             "gravel", "checkerboard", "colorwheel", "logo", "binary_blobs", "immunohistochemistry", "retina",
             "hubble_deep_field", "microaneurysms"]


def _rgb(image) -> np.ndarray:
    im = np.asarray(image)
    if im.dtype == bool:
        im = im.astype(np.float32)
    if im.dtype != np.uint8:
        im = (255 * (im.astype(np.float32) - im.min()) / max(1e-6, float(np.ptp(im)))).astype(np.uint8)
    if im.ndim == 2:
        im = np.stack([im] * 3, -1)
    return np.ascontiguousarray(im[..., :3][:960, :960])


def cases() -> Dict[str, np.ndarray]:
    import skimage.data as data
    astronaut = data.astronaut()
    out = {"astronaut": astronaut}
    for deg in (-45, -30, -15, 15, 30, 45):
        out[f"tilt {deg:+d}"] = np.asarray(Image.fromarray(astronaut).rotate(
            deg, resample=Image.BICUBIC, fillcolor=(128, 128, 128)))
    x, y, w, h = 178, 63, 89, 112  # the face's box in the upright photo (YuNet's)
    for px in (16, 18, 20, 24):
        s = px / w
        small = np.asarray(Image.fromarray(astronaut).resize((int(512 * s), int(512 * s)), Image.BICUBIC))
        canvas = np.full((160, 160, 3), 128, np.uint8)
        canvas[:small.shape[0], :small.shape[1]] = small[:160, :160]
        out[f"face {px} px"] = canvas
    covered = astronaut.copy()
    covered[y + int(h * 0.62): y + h + 5, x - 5: x + w + 5] = (30, 30, 120)
    out["mouth and chin covered"] = covered
    out["cameraman (three-quarter)"] = _rgb(data.camera())
    return out


def face_free() -> Dict[str, np.ndarray]:
    import skimage.data as data
    return {name: _rgb(getattr(data, name)()) for name in FACE_FREE}


def main() -> List[Dict]:
    warnings.simplefilter("ignore")
    yunet, haar = YuNetDetector(min_score=0.0, min_size=1, max_side=960), HaarDetector(min_size=1, max_side=960)
    rows = []
    for name, image in cases().items():
        found = [f for f in yunet.detect(image) if f.score >= 0.6]
        rows.append({"case": name, "yunet": [round(f.score, 2) for f in found], "haar": len(haar.detect(image))})
    free = face_free()
    false = {n: [round(f.score, 2) for f in yunet.detect(im) if f.score >= 0.6] for n, im in free.items()}
    rows.append({"case": f"{len(free)} face-free images", "yunet_false_boxes": sum(map(len, false.values())),
                 "yunet_highest_score": max((f.score for im in free.values() for f in yunet.detect(im)), default=0),
                 "haar_false_boxes": {n: len(haar.detect(im)) for n, im in free.items() if haar.detect(im)}})
    for r in rows:
        print(json.dumps(r))
    return rows


if __name__ == "__main__":
    main()
