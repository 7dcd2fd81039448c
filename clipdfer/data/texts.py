"""Class texts of the text heads: DFER-CLIP's descriptors and text settings (official code, ``models/Text.py``, keyed by
our class names); the zero-shot templates and words and PMFER's AU phrases (ours).
"""

import functools
import json
import os
from typing import Dict, List, Sequence

__all__ = ["au_phrases", "au_prompt_bank",
           "DFERCLIP_DESCRIPTORS", "DFERCLIP_TEXT_TYPES", "dferclip_texts", "EXPRESSION_ADJECTIVES",
           "ZERO_SHOT_TEMPLATES"]

DFERCLIP_DESCRIPTORS: Dict[str, str] = {
    "happiness": "a smiling mouth, raised cheeks, wrinkled eyes, and arched eyebrows.",
    "sadness": "tears, a downward turned mouth, drooping upper eyelids, and a wrinkled forehead.",
    "neutral": "relaxed facial muscles, a straight mouth, a smooth forehead, and unremarkable eyebrows.",
    "anger": "furrowed eyebrows, narrow eyes, tightened lips, and flared nostrils.",
    "surprise": "widened eyes, an open mouth, raised eyebrows, and a frozen expression.",
    "disgust": "a wrinkled nose, lowered eyebrows, a tightened mouth, and narrow eyes.",
    "fear": "raised eyebrows, parted lips, a furrowed brow, and a retracted chin.",
    "contempt": "one side of its mouth raised, one eyebrow lower and one raised, narrowed eyes, and a raised chin.",
    "anxiety": "a tensed forehead, tightly pressed lips, pupil dilation, and tensed facial muscles.",
    "helplessness": "drooping eyebrows, a downward gaze, a downturned mouth, and lacking expression.",
    "disappointment": "a downturned mouth, lowered eyebrows, narrowed eyes, and a sighing face.",
}

DFERCLIP_TEXT_TYPES = ("class_descriptor", "class_names", "class_names_with_context")


def dferclip_texts(class_names: Sequence[str], text_type: str = "class_descriptor") -> List[str]:
    """DFER-CLIP's text for each class: its descriptor, ``"<name>."`` or ``"an expression of <name>."``."""
    if text_type == "class_names":
        return [f"{n}." for n in class_names]
    if text_type == "class_names_with_context":
        return [f"an expression of {n}." for n in class_names]
    if text_type != "class_descriptor":
        raise ValueError(f"text_type={text_type!r}: expected one of {DFERCLIP_TEXT_TYPES}")
    missing = [n for n in class_names if n not in DFERCLIP_DESCRIPTORS]
    if missing:
        raise ValueError(f"no DFER-CLIP descriptor for classes {missing}: known are {sorted(DFERCLIP_DESCRIPTORS)}; "
                         f"pass class_texts=[...] with one description per class, or text_type='class_names'")
    return [DFERCLIP_DESCRIPTORS[n] for n in class_names]


# Adjectives for "a photo of a {} face." style prompts (zero-shot CLIP, CoOp/CoCoOp class tokens).
EXPRESSION_ADJECTIVES: Dict[str, str] = {
    "happiness": "happy", "sadness": "sad", "neutral": "neutral", "anger": "angry", "surprise": "surprised",
    "disgust": "disgusted", "fear": "fearful", "contempt": "contemptuous", "anxiety": "anxious",
    "helplessness": "helpless", "disappointment": "disappointed",
}

# Our zero-shot template ensemble (averaged in embedding space).
ZERO_SHOT_TEMPLATES = (
    "a photo of a {} face.",
    "a close-up photo of a {} face.",
    "a photo of a person with a {} expression.",
    "a face that looks {}.",
    "a video frame of a {} person.",
)


@functools.lru_cache(maxsize=1)
def _au_bank() -> Dict[str, Dict]:
    with open(os.path.join(os.path.dirname(__file__), "au_prompts.json")) as f:
        return json.load(f)["classes"]


def au_phrases() -> Dict[str, List[str]]:
    """Every class of PMFER's bank of action-unit phrases (``clipdfer/data/au_prompts.json``) -> its phrases."""
    return {n: list(c["phrases"]) for n, c in _au_bank().items()}


def au_prompt_bank(class_names: Sequence[str]) -> Dict[str, List[str]]:
    """PMFER's action-unit phrases for each class (``clipdfer/data/au_prompts.json``)."""
    bank = _au_bank()
    missing = [n for n in class_names if n not in bank]
    if missing:
        example = {n: [f"{n} expression"] for n in missing}
        raise ValueError(f"no AU phrases for classes {missing}: known are {sorted(bank)}; pass phrases={example!r}, "
                         f"each placeholder phrase replaced by the facial actions the class shows (e.g. 'raised "
                         f"cheeks')")
    return {n: list(bank[n]["phrases"]) for n in class_names}
