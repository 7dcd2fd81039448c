"""UAR, WAR, per-class recall and the confusion matrix."""

from typing import Dict, List, Sequence

import torch

__all__ = ["confusion_matrix", "classification_report", "save_confusion_png"]


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_report(preds: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> Dict:
    """WAR (accuracy), UAR (mean recall over the classes present), per-class recall, the confusion matrix, in %."""
    c = len(class_names)
    cm = confusion_matrix(preds, labels, c)
    support = cm.sum(dim=1)
    recall = torch.where(support > 0, cm.diag().float() / support.clamp_min(1), torch.full((c,), float("nan")))
    present = support > 0
    return {
        "war": 100.0 * float(cm.diag().sum()) / max(1, int(support.sum())),
        "uar": 100.0 * float(recall[present].mean()) if present.any() else float("nan"),
        "per_class_recall": {n: (None if not present[i] else 100.0 * float(recall[i]))
                             for i, n in enumerate(class_names)},
        "support": {n: int(support[i]) for i, n in enumerate(class_names)},
        "confusion_matrix": cm.tolist(),
        "num_samples": int(support.sum()),
    }


def save_confusion_png(cm: List[List[int]], class_names: Sequence[str], path: str, title: str = "") -> None:
    """A confusion matrix as a PNG: rows normalised to recall, counts in the cells (drawn with Pillow)."""
    from PIL import Image, ImageDraw
    c = len(class_names)
    cell, left, top = 64, 130, 60
    img = Image.new("RGB", (left + c * cell + 20, top + c * cell + 110), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title or "confusion matrix (rows: true, columns: predicted)", fill="black")
    for i in range(c):
        total = max(1, sum(cm[i]))
        draw.text((5, top + i * cell + cell // 2 - 5), class_names[i][:18], fill="black")
        for j in range(c):
            frac = cm[i][j] / total
            shade = int(255 * (1 - frac))
            x, y = left + j * cell, top + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(shade, shade, 255), outline="grey")
            draw.text((x + 6, y + cell // 2 - 12), f"{cm[i][j]}", fill="black" if frac < 0.6 else "white")
            draw.text((x + 6, y + cell // 2 + 2), f"{100 * frac:.0f}%", fill="black" if frac < 0.6 else "white")
    for j in range(c):
        draw.text((left + j * cell + 4, top + c * cell + 8 + 12 * (j % 2)), class_names[j][:10], fill="black")
    img.save(path)
