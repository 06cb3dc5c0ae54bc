"""The training vocabulary: a text description per (valence bin, arousal bin), and the bin of a label.

Its own module: the text embeddings of the prompts depend on these words only, not on the training loops
(workflow: editing clipva.training leaves the encoded prompts up to date).
"""

from __future__ import annotations

import torch

VALENCE_WORDS = {
    2: ["unpleasant", "pleasant"],
    3: ["unpleasant", "neutral", "pleasant"],
    4: ["very unpleasant", "mildly unpleasant", "mildly pleasant", "very pleasant"],
    5: ["very unpleasant", "unpleasant", "neutral", "pleasant", "very pleasant"],
}
AROUSAL_WORDS = {
    2: ["calm", "excited"],
    3: ["calm", "alert", "excited"],
    4: ["sleepy", "calm", "alert", "excited"],
    5: ["sleepy", "calm", "alert", "excited", "agitated"],
}


def emotion_prompts(bins: int) -> list[str]:
    """One description per (valence bin, arousal bin); index = valence_bin * bins + arousal_bin."""
    return [
        f"a photo of a face with a {v} expression, looking {a}"
        for v in VALENCE_WORDS[bins]
        for a in AROUSAL_WORDS[bins]
    ]


def emotion_bins(va: torch.Tensor, bins: int) -> torch.Tensor:
    """(N, 2) valence/arousal in -1..1 -> bin index per row (equal-width bins per dimension), on va's device."""
    levels = ((va + 1) / 2 * bins).long().clamp(0, bins - 1)
    return levels[:, 0] * bins + levels[:, 1]
