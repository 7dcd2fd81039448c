"""Label orders of the DFER datasets. Index i of each tuple is label i in the official annotation files."""

from typing import Dict, Tuple

__all__ = ["DFEW_CLASSES", "FERV39K_CLASSES", "MAFW_CLASSES", "RAFDB_CLASSES", "DATASET_CLASSES", "dataset_classes"]

# DFEW and FERV39k share one 7-class order (as used by DFER-CLIP and the CLIP-Guided DFER paper).
DFEW_CLASSES: Tuple[str, ...] = ("happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear")
FERV39K_CLASSES: Tuple[str, ...] = DFEW_CLASSES
# MAFW: the same 7 followed by its four extra classes.
MAFW_CLASSES: Tuple[str, ...] = DFEW_CLASSES + ("contempt", "anxiety", "helplessness", "disappointment")

# RAF-DB (basic emotions, static images): labels 1-7 of its list_patition_label.txt, here 0-based.
RAFDB_CLASSES: Tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")

DATASET_CLASSES: Dict[str, Tuple[str, ...]] = {
    "rafdb": RAFDB_CLASSES,
    "dfew": DFEW_CLASSES,
    "ferv39k": FERV39K_CLASSES,
    "mafw": MAFW_CLASSES,
}


def dataset_classes(dataset: str) -> Tuple[str, ...]:
    """Class names of a dataset in label order.

    Args:
        dataset: one of ``dfew``, ``ferv39k``, ``mafw``, ``rafdb`` (case-insensitive).
    """
    key = dataset.lower()
    if key not in DATASET_CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(DATASET_CLASSES)}")
    return DATASET_CLASSES[key]
