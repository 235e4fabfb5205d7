"""The flow ODE sampler (SiT / REPA convention): one Euler or Heun step equals the hand-computed update on a
converted SiT-format checkpoint; CFG on the velocity; masks; REPA's training heads are dropped."""

import pytest
import synthetic
import torch
from conftest import record_class_labels
from test_masks import weight_edited

from bottleneck_utils import masks, models, sampling
from bottleneck_utils.flow import FlowODE


@pytest.fixture(scope="module")
def sit(tmp_path_factory):
    state = synthetic.original_dit_state_dict(seed=3)
    path = synthetic.save_checkpoint(tmp_path_factory.mktemp("sit") / "SiT-tiny.pt", {"ema": state})
    return models.load(str(path), full=True, num_heads=synthetic.HEADS)  # family "sit" from the name: noise at 0


def guided_velocity(bundle, x, t, labels, cfg):
    """v_u + cfg·(v_c − v_u) on the first C channels, straight from the transformer."""
    channels = x.shape[1]
    t = torch.full((len(x),), float(t))
    conditional = bundle.transformer(x, timestep=t, class_labels=labels).sample[:, :channels]
    null = torch.full_like(labels, bundle.null_label)
    unconditional = bundle.transformer(x, timestep=t, class_labels=null).sample[:, :channels]
    return unconditional + cfg * (conditional - unconditional)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_one_step_equals_the_hand_computed_update(sit, method):
    bundle, labels, cfg = sit, torch.tensor([0, 3, 7]), 2.5
    bundle.scheduler = FlowODE(noise_time=0.0, method=method)
    bundle.scheduler.set_timesteps(1)  # one interval, t: 0 → 1
    x0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    v0 = guided_velocity(bundle, x0, 0.0, labels, cfg)
    expected = x0 + v0  # Euler, h = 1
    if method == "heun":
        expected = x0 + (v0 + guided_velocity(bundle, x0 + v0, 1.0, labels, cfg)) / 2
    with torch.no_grad():
        got = sampling._integrate_flow(bundle, x0, labels, cfg, None)
    # the same float32 ops, batched as CFG batches them (2B rows, not B): BLAS may differ in the last bits, by up
    # to 1.3e-5 seen on another CPU of this kind; a wrong step or convention moves the result by far more than 1e-4
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_repa_runs_from_noise_at_one_to_data_at_zero():
    ode = FlowODE(noise_time=1.0, method="euler")
    ode.set_timesteps(4)
    assert ode.grid.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0] and ode.timesteps.tolist() == [1.0, 0.75, 0.5, 0.25]
    x = ode.integrate(lambda x, t: torch.ones_like(x), torch.zeros(2))  # dx/dt = 1 over t: 1 → 0
    assert torch.allclose(x, torch.full((2,), -1.0))
    heun = FlowODE(noise_time=0.0, method="heun")
    heun.set_timesteps(10)
    exact = heun.integrate(lambda x, t: 2 * t * torch.ones_like(x), torch.zeros(1))  # ∫₀¹ 2t dt = 1, exact for Heun
    assert torch.allclose(exact, torch.ones(1), atol=1e-6)
    with pytest.raises(ValueError, match="noise_time must be 0.0 \\(SiT\\) or 1.0 \\(REPA\\)"):
        FlowODE(noise_time=0.5)
    with pytest.raises(ValueError, match="call set_timesteps"):
        _ = FlowODE().timesteps


def test_cfg_scale_one_sends_no_null_labels(sit):
    sit.scheduler = FlowODE(method="heun")
    seen = record_class_labels(sit.transformer)
    try:
        sampling.sample(sit, [1, 2], num_steps=2, cfg_scale=1.0, progress=False)
    finally:
        del sit.transformer.forward  # the spy was an instance attribute
    assert len(seen) == 4 and all((labels != sit.null_label).all() for labels in seen)  # 2 steps × 2 evaluations


def test_masked_flow_sampling_equals_the_weight_edit(sit):
    sit.scheduler = FlowODE(method="heun")
    coordinates = torch.arange(0, sit.hidden_size, 5)
    mask = masks.coordinate_mask(coordinates, sit.hidden_size)
    pruned = sampling.sample(sit, [0, 5], num_steps=3, seed=1, mask=mask, progress=False)
    edited = sampling.sample(weight_edited(sit, coordinates), [0, 5], num_steps=3, seed=1, progress=False)
    assert torch.allclose(pruned, edited, rtol=0, atol=1e-6)  # same batch: only the zeroed coordinates differ
    plain = sampling.sample(sit, [0, 5], num_steps=3, seed=1, progress=False)
    assert not torch.allclose(pruned, plain, atol=1e-4)


def test_first_step_schedule_masks_only_the_noise_end(sit):
    sit.scheduler = FlowODE(method="heun")
    sit.scheduler.set_timesteps(3)
    mask = masks.coordinate_mask(range(sit.hidden_size), sit.hidden_size)  # everything: c = 0 when active
    seen = []
    with masks.prune(sit, mask, "first", timesteps=sit.scheduler.timesteps):
        handle = models.block_embedders(sit.transformer)[0].register_forward_hook(  # after the pruning hook
            lambda module, args, output: seen.append((float(args[0].flatten()[0]), output.abs().sum().item())))
        try:
            sampling._integrate_flow(sit, torch.randn(1, 4, 8, 8), torch.tensor([2]), 1.0, None)
        finally:
            handle.remove()
    zeroed = {t for t, size in seen if size == 0}
    assert zeroed == {0.0} and any(size > 0 for t, size in seen if t > 0)


def test_repa_projectors_are_dropped_with_a_note(tmp_path, capsys):
    state = synthetic.original_dit_state_dict(seed=4)
    state |= {"projectors.0.0.weight": torch.randn(8, 384), "projectors.0.0.bias": torch.randn(8)}
    path = synthetic.save_checkpoint(tmp_path / "repa-tiny.pt", {"ema": state})
    bundle = models.load(str(path), full=True, num_heads=synthetic.HEADS)
    assert "dropped 2 training-only tensors (REPA's projectors.*)" in capsys.readouterr().out
    assert isinstance(bundle.scheduler, FlowODE) and bundle.scheduler.noise_time == 1.0
    images = sampling.sample(bundle, [1], num_steps=2, progress=False)
    assert images.shape == (1, 4, 8, 8) and torch.isfinite(images).all()


def test_first_sampling_timestep_of_a_flow_bundle_is_its_noise_end(sit):
    from bottleneck_utils.embeddings import first_sampling_timestep, sampling_path_times

    sit.scheduler = FlowODE(noise_time=0.0, method="heun")
    sit.scheduler.set_timesteps(7)
    assert first_sampling_timestep(sit, 50) == 0.0 and len(sit.scheduler.grid) == 8  # the bundle's grid is kept
    assert sampling_path_times(sit, 3).tolist() == [0.0, 0.5, 1.0]
