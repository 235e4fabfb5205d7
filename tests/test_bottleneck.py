"""The bottleneck built into training: the k-dim adaLN code, the L1 penalty, and their runs' save/load."""

from dataclasses import replace

import pytest
import torch

from bottleneck_utils import adaln_code, models
from bottleneck_utils.models import DDPM
from bottleneck_utils.organisms import recipes, train
from tests.test_train import TINY, tiny_source


def trained_like(seed=0):
    """A tiny DiT with non-zero adaLN and output weights (the DiT init zeroes them, which would hide any error)."""
    model = train.build_transformer(TINY.transformer, seed)
    torch.manual_seed(seed + 1)
    for layer in [getattr(owner, name) for owner, name in adaln_code._adaln_layers(model)] + [model.proj_out_2]:
        torch.nn.init.normal_(layer.weight, std=0.1)
    return model.eval()


def output(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, t, y = torch.randn(4, 1, 8, 8, generator=g), torch.tensor([999, 500, 10, 0]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        return model(x, timestep=t, class_labels=y).sample  # (4, 2, 8, 8): ε and σ channels


def test_the_full_width_code_with_the_identity_is_the_plain_model():
    plain = trained_like()
    narrowed = adaln_code.narrow(trained_like(), torch.eye(plain.inner_dim))
    assert adaln_code.code_width(narrowed) == plain.inner_dim and adaln_code.code_width(plain) is None
    # products with an identity are exact; 1e-6 leaves room for a different matmul kernel on the (B, D) shapes
    torch.testing.assert_close(output(narrowed), output(plain), rtol=0, atol=1e-6)


def test_the_full_width_principal_basis_is_the_plain_model():
    plain = trained_like()
    basis = train.principal_basis(plain, plain.inner_dim, DDPM)  # (D, D) orthonormal
    # the SVD runs in float64 and is cast to float32 (~6e-8 per entry); 1e-5 allows 16-term sums on any BLAS
    torch.testing.assert_close(basis @ basis.T, torch.eye(plain.inner_dim), rtol=0, atol=1e-5)
    narrowed = adaln_code.narrow(trained_like(), basis)
    # W Pᵀ P = W up to float32 rounding of 16-term sums (~1e-7 relative each), far below 1e-4
    torch.testing.assert_close(output(narrowed), output(plain), rtol=1e-4, atol=1e-5)


def test_a_narrow_code_shares_one_projection_and_changes_the_output():
    plain, narrowed = trained_like(), adaln_code.narrow(trained_like(), train.principal_basis(trained_like(), 2, DDPM))
    layers = [getattr(owner, name) for owner, name in adaln_code._adaln_layers(narrowed)]
    assert all(layer[0] is layers[0][0] for layer in layers)  # one P
    assert layers[0][0].weight.shape == (2, 16) and layers[0][1].weight.shape == (6 * 16, 2)
    assert layers[-1][1].weight.shape == (2 * 16, 2)  # the final layer's shift and scale
    assert output(plain).abs().mean() > 0.01  # the comparison below sees a real output
    assert not torch.allclose(output(narrowed), output(plain), atol=1e-3)  # 2 of 16 directions lose information


@pytest.mark.parametrize("basis", [torch.eye(3, 4), torch.eye(17, 16), torch.ones(16)])
def test_a_basis_of_the_wrong_shape_is_refused(basis):
    with pytest.raises(ValueError, match=r"basis must be \(k, 16\)"):
        adaln_code.narrow(trained_like(), basis)


def test_adaln_macs():
    assert adaln_code.adaln_macs(16, 2) == 2 * 16 * 96 + 16 * 32
    assert adaln_code.adaln_macs(16, 2, k=4) == 16 * 4 + 2 * 4 * 96 + 4 * 32
    assert adaln_code.adaln_macs(16, 2, k=16) > adaln_code.adaln_macs(16, 2)  # full width only adds P


def test_l1_penalty_is_lambda_times_mean_abs_c():
    model, t, y = trained_like(), torch.tensor([999, 3]), torch.tensor([0, 3])
    embedder = model.transformer_blocks[0].norm1.emb
    c = embedder(t, y, hidden_dtype=torch.float32)
    assert train.l1_penalty(embedder, TINY.l1_c, t, y) == 0.0
    torch.testing.assert_close(train.l1_penalty(embedder, 0.5, t, y), 0.5 * c.abs().mean())


def test_a_narrowed_run_saves_and_loads(tmp_path):
    recipe = replace(TINY, code_width=3, l1_c=0.1)
    ema = train.train_dit(recipe, tiny_source(), 2, 0, tmp_path, progress=False)
    train.save_run(tmp_path, ema, recipe, 2, 0)
    bundle = models.load(str(tmp_path))
    assert adaln_code.code_width(bundle.transformer) == 3 and output(ema).abs().max() > 0
    torch.testing.assert_close(output(bundle.transformer), output(ema), rtol=0, atol=0)  # the same weights


def test_the_variants_differ_from_the_control_in_one_constraint():
    control = recipes.VARIANTS["beyond/full"].as_dict()
    assert control["init_from"] == "mnist-dit" and control["code_width"] is None and control["l1_c"] == 0
    for name, recipe in recipes.VARIANTS.items():
        changed = {key for key, value in recipe.as_dict().items() if value != control[key]}
        assert changed == (set() if name == "beyond/full" else {"code_width"} if "/k" in name else {"l1_c"})


def quality_rows(**rows):
    """A fabricated quality table: variant → (ΔFID, low, high, Δaccuracy, low, high); the control's changes are 0."""
    import pandas as pd

    from bottleneck_utils.chapters import beyond

    table = {name: {"code width": recipes.VARIANTS[name].code_width, "L1 λ": recipes.VARIANTS[name].l1_c,
                    **dict(zip(["ΔFID", "ΔFID low", "ΔFID high", "Δaccuracy", "Δaccuracy low", "Δaccuracy high"],
                               values))}
             for name, values in (rows | {beyond.CONTROL: (0.0,) * 6}).items()}
    return pd.DataFrame(table).T.astype(float)


def test_kept_rows_are_an_equivalence_test_on_fid_and_accuracy_both():
    from bottleneck_utils.chapters import beyond, report

    bands = {"FID": 10.0, "accuracy": 0.02}
    quality = quality_rows(**{
        "beyond/k2": (20.0, 12.0, 28.0, -0.1, -0.12, -0.08),  # harmful on both
        "beyond/k8": (6.0, -1.9, 9.9, -0.005, -0.015, 0.005),  # inside both bands
        "beyond/k16": (3.0, 1.0, 5.0, -0.04, -0.065, -0.015),  # FID inside, accuracy out (the k = 8)
        "beyond/l1-1e-1": (-15.8, -27.2, -4.4, 0.0, -0.01, 0.01)})  # a large gain is no equivalence either
    rows = beyond.kept_rows(quality, bands)
    assert [row["verdict"] for row in rows] == ["not reproduced", "reproduced", "not reproduced", "not reproduced"]
    assert rows[1]["value"] == pytest.approx(max(9.9 / 10, 0.015 / 0.02)) and rows[1]["bar"] == 1.0
    assert rows[2]["value"] == pytest.approx(0.065 / 0.02)  # the accuracy interval reaches 3.25 bands
    assert rows[1]["ours"] == "ΔFID +6.00 [-1.90, +9.90] in ±10.00; Δaccuracy -0.5 [-1.5, +0.5] points in ±2.0"
    assert rows[0]["claim"].startswith("a 2-dim code") and rows[3]["claim"].startswith("L1 λ = 0.1")
    assert report.rule_violations(rows) == []
    silent = beyond.kept_rows(quality, {"FID": 10.0, "accuracy": 0.0})  # the control's draws never differed
    assert {row["verdict"] for row in silent} == {"not testable here"}
    assert silent[0]["ours"].endswith("(no accuracy band: the control's own draws never differed)")


def test_the_floor_is_the_control_paired_with_itself_and_a_harmful_variant_fails():
    """The whole table from fabricated sample sets: the control at seed 0 and at five noise seeds (other features,
    other mistakes, the same labels), a harmless variant (the control's noise, its features nudged) and a harmful
    one (features moved, 15% more mistakes)."""
    import numpy as np

    from bottleneck_utils import metrics
    from bottleneck_utils.chapters import beyond, report

    n, width = 300, 4
    labels = np.arange(n) % 10
    reference = metrics.Reference(np.zeros(width), np.eye(width))  # statistics only: FID and accuracy

    def draw(noise_seed, shift=0.0, nudge=0.0, extra_mistakes=0.0):
        rng = np.random.default_rng(noise_seed)
        features = rng.normal(0.0, 1.0, (n, width)) + shift
        wrong = rng.random(n) < 0.05
        extra = np.random.default_rng(99)  # the variants' own changes, the same for any noise seed
        features = features + nudge * extra.normal(size=(n, width))
        wrong |= extra.random(n) < extra_mistakes
        predicted = np.where(wrong, (labels + 1) % 10, labels)
        return metrics.SampleSet(features, labels, np.eye(10)[predicted] * 0.9 + 0.01)

    sets = {beyond.CONTROL: draw(0), "beyond/k8": draw(0, nudge=0.2, extra_mistakes=0.01), "beyond/k2": draw(0, shift=0.5, extra_mistakes=0.15)}
    draws = {seed: draw(seed) for seed in (1, 2, 3, 4, 5)}
    widths = {name: recipes.VARIANTS[name].code_width for name in sets}
    quality, floor = beyond.quality_tables(sets, draws, reference, widths, n_boot=50, seed=0)
    assert list(floor.index) == [1, 2, 3, 4, 5] and list(quality.index) == list(sets)
    bands = beyond.equivalence_bands(floor)
    for metric in beyond.QUALITY_METRICS:  # the band: the farthest |end| of the control-against-itself intervals
        ends = floor[[f"Δ{metric} low", f"Δ{metric} high"]].abs().to_numpy()
        assert bands[metric] == ends.max() > 0
        assert (floor[f"Δ{metric} low"] < floor[f"Δ{metric} high"]).all()
    assert (quality.loc[beyond.CONTROL, ["ΔFID", "Δaccuracy"]] == 0).all()
    rows = beyond.kept_rows(quality, bands)
    assert report.rule_violations(rows) == []
    assert {row["claim"].split("(")[1][:-1]: row["verdict"] for row in rows} == {
        "beyond/k8": "reproduced", "beyond/k2": "not reproduced"}
    with pytest.raises(ValueError, match="at least 5 distinct seeds other than seed=0"):
        beyond.quality_tables(sets, {seed: draws[seed] for seed in (1, 2, 3, 4)}, reference, widths, 5, seed=0)
    with pytest.raises(ValueError, match="at least 5 distinct seeds"):
        beyond.quality_tables(sets, draws | {0: draws[1]}, reference, widths, 5, seed=0)
