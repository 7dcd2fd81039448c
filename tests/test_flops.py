"""The paper's FLOPs column (Tables 2-4) reproduced in its own counting convention, and the full count."""

import os
import sys

import pytest
import torch

import clipdfer
from clipdfer.profiling import count_macs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from flops import PAPER_ROWS, measure, paper_table  # noqa: E402


def test_every_row_of_tables_2_to_4_within_0_02_g():
    rows = paper_table()
    assert [r["config"] for r in rows] == [c for c, _, _ in PAPER_ROWS]
    for r in rows:
        assert abs(r["ours_paper_convention_gflops"] - r["paper_gflops"]) <= 0.02, r


def test_full_count_of_the_clip_floor_matches_vit_b32():
    # ViT-B/32 on 224x224: 50 tokens; per frame conv 3072*768*49, per layer 12 * 768^2 per token, attention scores
    _, full, paper = measure("clipdfer_vitb32_dfew", interfit=False, msta=False, biehpro_depth=0)
    per_frame = 3072 * 768 * 49 + 12 * (50 * 12 * 768 ** 2 + 2 * 50 * 50 * 768) + 768 * 512
    assert full * 1e9 == pytest.approx(8 * per_frame, rel=1e-3)
    assert paper * 1e9 == pytest.approx(8 * (3072 * 768 * 49 + 12 * 50 * 8 * 768 ** 2), rel=1e-6)


def test_counting_works_for_every_family_on_tiny_models():
    for name in clipdfer.list_models("*_test"):
        model = clipdfer.create_model(name)
        video = torch.randn(1, model.num_frames, 3, 32, 32)
        full, paper = count_macs(model, video, "full"), count_macs(model, video, "paper")
        assert full > 0 and paper > 0, name
    with pytest.raises(ValueError, match="convention"):
        count_macs(model, video, "other")
