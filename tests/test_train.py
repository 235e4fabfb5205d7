"""The trainer: original DiT initialisation, one shared embedder, saved as identical per-block copies."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from bottleneck_utils import train
from bottleneck_utils.models import block_embedders, check_embedder_copies

TINY = {
    "transformer": dict(num_attention_heads=2, attention_head_dim=8, in_channels=1, num_layers=2, sample_size=8,
                        patch_size=2, num_embeds_ada_norm=3, norm_eps=1e-6),
    "steps": 6, "batch_size": 8, "lr": 1e-3, "ema_decay": 0.9, "label_dropout": 0.5, "log_every": 3,
    "class_names": ["a", "b", "c"],
}


def test_initialisation_is_the_original_dits():
    model = train.build_transformer(TINY["transformer"], seed=0)
    embedders = block_embedders(model)
    assert all(e is embedders[0] for e in embedders)  # one shared module
    assert embedders[0].class_embedder.dropout_prob == 0.0  # the trainer drops labels itself
    for block in model.transformer_blocks:
        assert block.norm1.linear.weight.abs().sum() == 0 and block.norm1.linear.bias.abs().sum() == 0
    for layer in (model.proj_out_1, model.proj_out_2):
        assert layer.weight.abs().sum() == 0
    table = embedders[0].class_embedder.embedding_table.weight
    assert table.shape == (4, 16)
    assert 0.005 < table.std().item() < 0.05  # N(0, 0.02) on 64 values


def tiny_training(tmp_path, seed=0):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1, torch.randint(3, (32,), generator=g)
    return train.train_dit(TINY, images, labels, TINY["steps"], seed, tmp_path / f"log{seed}.csv")


def test_training_is_seeded_and_logs(tmp_path):
    first, again = tiny_training(tmp_path), tiny_training(tmp_path)
    for p, q in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(p, q)  # bit-identical rerun on CPU
    rows = list(csv.DictReader((tmp_path / "log0.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    assert all(-1 <= float(r["cos_c"]) <= 1 and 0 < float(r["npr_y_ema"]) <= 1 for r in rows)
    assert float(rows[-1]["loss"]) > 0


def test_saved_checkpoint_has_identical_block_copies(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path)
    (tmp_path / "tiny").mkdir()
    ema = tiny_training(tmp_path)
    sha = train.save_dit("tiny", ema, TINY, 6, 0)
    state = load_file(tmp_path / "tiny" / "model.safetensors")
    key = "norm1.emb.class_embedder.embedding_table.weight"
    assert torch.equal(state[f"transformer_blocks.0.{key}"], state[f"transformer_blocks.1.{key}"])
    assert json.loads((tmp_path / "manifest.json").read_text())["tiny"]["sha256"] == sha
    from diffusers import DiTTransformer2DModel

    reloaded = DiTTransformer2DModel.from_config(json.loads((tmp_path / "tiny" / "config.json").read_text()))
    reloaded.load_state_dict(state)
    check_embedder_copies(reloaded)
    with pytest.raises(ValueError, match="blocks \\[1\\]"):
        with torch.no_grad():
            reloaded.transformer_blocks[1].norm1.emb.class_embedder.embedding_table.weight[0, 0] += 1
        check_embedder_copies(reloaded)
