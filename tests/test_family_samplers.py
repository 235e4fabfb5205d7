"""Each family's own sampler as options of sample(): CFG channels, the guidance interval (REPA's start-of-step rule),
the timestep shift, REPA-Heun, SiT's and REPA's SDE, dopri5, CFG <= 1, and every bad option refused in one line.

Every update is checked against the upstream formula written out by hand on a tiny SiT-format model."""

import math
import re

import pytest
import torch
from conftest import FLOAT32_DRIFT, record_class_labels, tiny_bundle
from test_bad_inputs import one_line

from bottleneck_utils import flow, models, sampling
from bottleneck_utils.flow import FlowODE
from tests import synthetic

LABELS = torch.tensor([0, 3, 7])
CFG = 2.5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flow")
    state = {"ema": synthetic.original_dit_state_dict(seed=3)}
    return {name: synthetic.save_checkpoint(folder / f"{name}-tiny.pt", state) for name in ("SiT", "REPA")}


@pytest.fixture
def sit(checkpoints):
    return models.load(str(checkpoints["SiT"]), full=True, num_heads=synthetic.HEADS)  # noise at t = 0


@pytest.fixture
def repa(checkpoints):
    return models.load(str(checkpoints["REPA"]), full=True, num_heads=synthetic.HEADS)  # noise at t = 1


def noise(seed=0, shape=(3, 4, 8, 8)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def model(bundle, x, t, labels):
    """The model's output on the first C channels, one plain forward (learned σ dropped)."""
    return bundle.transformer(x, timestep=torch.full((len(x),), float(t)), class_labels=labels).sample[:, :x.shape[1]]


def guided(bundle, x, t, labels, cfg, channels=None):
    """forward_with_cfg: u + cfg·(c − u) on the first ``channels`` channels (all: None), c on the rest."""
    conditional = model(bundle, x, t, labels)
    unconditional = model(bundle, x, t, torch.full_like(labels, bundle.null_label))
    k = x.shape[1] if channels is None else channels
    return torch.cat([unconditional[:, :k] + cfg * (conditional[:, :k] - unconditional[:, :k]), conditional[:, k:]], 1)


def integrate(bundle, x, cfg=CFG, num_steps=2, generators=None, **options):
    """sample()'s own flow path on noise x, under the given sampler options."""
    conventions = sampling.sampler_conventions(bundle, **options)
    bundle.scheduler.set_timesteps(num_steps)
    ode = sampling._integrator(bundle, conventions, num_steps)
    with torch.no_grad():
        return sampling._integrate_flow(bundle, x, LABELS, cfg, None, conventions, ode, generators)


def close(got, expected):
    # the same float32 ops, batched as CFG batches them (2B rows, not B): BLAS may differ in the last bits, by up
    # to 1.3e-5 seen on another CPU of this kind; a wrong step or convention moves the result by far more than 1e-4
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
#                                   Hand-computed steps of every option
# ---------------------------------------------------------------------------------------------------


def test_cfg_on_the_first_three_channels_leaves_the_fourth_conditional(sit):
    x0 = noise()
    with torch.no_grad():
        expected = x0 + guided(sit, x0, 0.0, LABELS, CFG, channels=3)  # one Euler interval, t: 0 → 1
        everywhere = x0 + guided(sit, x0, 0.0, LABELS, CFG)
    got = integrate(sit, x0, num_steps=1, solver="euler", cfg_channels=3)
    close(got, expected)
    assert (got - everywhere)[:, :3].abs().max() < 1e-5 and (got - everywhere)[:, 3].abs().max() > 1e-3


def test_repa_heun_decides_guidance_at_the_step_start_and_skips_the_last_correction(repa):
    """REPA's euler_sampler(heun=True): grid 1 → 0.5 → 0, CFG only for t ≤ 0.5. The first step starts at t = 1,
    outside, so neither its prediction nor its correction (at t = 0.5, inside) is guided; the last has no correction."""
    x0 = noise(1)
    with torch.no_grad():
        d_cur = model(repa, x0, 1.0, LABELS)
        x_pred = x0 - 0.5 * d_cur
        x1 = x0 - 0.5 * (0.5 * d_cur + 0.5 * model(repa, x_pred, 0.5, LABELS))
        x2 = x1 - 0.5 * guided(repa, x1, 0.5, LABELS, CFG)
    close(integrate(repa, x0, family="repa", solver="repa-heun", guidance_interval=(0.0, 0.5)), x2)
    textbook = integrate(repa, x0, family="repa", solver="heun", guidance_interval=(0.0, 0.5))
    assert (textbook - x2).abs().max() > 1e-3  # the textbook Heun corrects the last interval too


def test_repa_heun_of_one_interval_is_euler(repa):
    x0 = noise(2)
    close(integrate(repa, x0, num_steps=1, solver="repa-heun"), integrate(repa, x0, num_steps=1, solver="euler"))


def test_lightningdit_shift_and_guidance_interval(sit):
    """LightningDiT: t ↦ 0.3·t / (1 − 0.7·t) on the grid, no CFG for t < 0.125, CFG on 3 channels."""
    ode = FlowODE(noise_time=0.0, method="euler", shift=0.3)
    ode.set_timesteps(4)
    s = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    torch.testing.assert_close(ode.grid, 0.3 * s / (1 - 0.7 * s))
    repa_axis = FlowODE(noise_time=1.0, method="euler", shift=0.3)
    repa_axis.set_timesteps(4)
    torch.testing.assert_close(repa_axis.grid, 1 - ode.grid)  # the same warp, measured from REPA's noise end
    x0, t1 = noise(3), 0.3 * 0.5 / (1 - 0.7 * 0.5)  # two intervals: grid 0, 0.2308, 1
    with torch.no_grad():
        x1 = x0 + t1 * model(sit, x0, 0.0, LABELS)  # t = 0 < 0.125: the conditional velocity alone
        x2 = x1 + (1 - t1) * guided(sit, x1, t1, LABELS, CFG, channels=3)
    close(integrate(sit, x0, family="lightningdit"), x2)


def step_generators(seed=0):
    return [torch.Generator().manual_seed(seed * 100 + i) for i in range(len(LABELS))]


def draw(generators, like):
    return torch.stack([torch.randn(like.shape[1:], generator=g) for g in generators])


def test_sit_sde_is_euler_maruyama_then_the_mean_step(sit):
    """SiT's transport: linspace(0, 0.96, N), drift v + (1 − t)·score with score (t·v − x)/(1 − t), noise
    √(2(1 − t))·√dt·w, then the last step x + drift·0.04 without noise ("Mean")."""
    x0, expected_noise = noise(4), step_generators()
    with torch.no_grad():
        t, dt = 0.0, 0.96
        v = guided(sit, x0, t, LABELS, CFG)
        drift = v + (1 - t) * (t * v - x0) / (1 - t)
        x1 = x0 + drift * dt + math.sqrt(2 * (1 - t)) * math.sqrt(dt) * draw(expected_noise, x0)
        t = 0.96
        v = guided(sit, x1, t, LABELS, CFG)
        x2 = x1 + (v + (1 - t) * (t * v - x1) / (1 - t)) * 0.04
    close(integrate(sit, x0, solver="sde", generators=step_generators()), x2)


def test_repa_sde_is_its_euler_maruyama_sampler(repa):
    """REPA's euler_maruyama_sampler: linspace(1, 0.04, N) then 0; d = v − t·score with score ((t − 1)·v − x)/t,
    x + d·dt + √(2t)·√|dt|·ε, the last step to 0 without noise."""
    x0, expected_noise = noise(5), step_generators(1)
    with torch.no_grad():
        t, dt = 1.0, 0.04 - 1.0
        v = guided(repa, x0, t, LABELS, CFG)
        d = v - t * ((t - 1) * v - x0) / t
        x1 = x0 + d * dt + math.sqrt(2 * t) * math.sqrt(abs(dt)) * draw(expected_noise, x0)
        t, dt = 0.04, -0.04
        v = guided(repa, x1, t, LABELS, CFG)
        x2 = x1 + (v - t * ((t - 1) * v - x1) / t) * dt
    close(integrate(repa, x0, solver="sde", generators=step_generators(1)), x2)


def test_sde_noise_follows_the_sample_not_the_batch(sit):
    labels = [1, 4, 2]
    whole = sampling.sample(sit, labels, num_steps=3, seed=2, solver="sde", progress=False)
    batched = sampling.sample(sit, labels, num_steps=3, seed=2, solver="sde", batch_size=2, progress=False)
    shard = sampling.sample(sit, labels[1:], num_steps=3, seed=2, solver="sde", first_index=1, progress=False)
    assert torch.allclose(whole, batched, atol=FLOAT32_DRIFT) and torch.allclose(whole[1:], shard, atol=FLOAT32_DRIFT)
    ode = sampling.sample(sit, labels, num_steps=3, seed=2, solver="euler", progress=False)
    assert not torch.allclose(whole, ode, atol=10 * FLOAT32_DRIFT)  # the step noise was really added


def test_options_leave_the_bundles_scheduler_as_loaded(sit):
    before = (sit.scheduler.method, sit.scheduler.shift)
    sampling.sample(sit, [1], num_steps=2, family="lightningdit", progress=False)
    assert (sit.scheduler.method, sit.scheduler.shift) == before == ("heun", 1.0)
    assert sit.scheduler.grid.tolist() == [0.0, 0.5, 1.0]  # sample() sets the bundle's own grid, as it always did


@pytest.mark.skipif(not flow.has_torchdiffeq(), reason="torchdiffeq (optional) is not installed")
def test_dopri5_integrates_an_exact_field_and_samples():
    ode = FlowODE(noise_time=0.0, method="euler")
    ode.set_timesteps(3)
    exact = flow.dopri5(lambda x, t: 3 * t**2 * torch.ones_like(x), torch.zeros(2), ode.grid)  # ∫₀¹ 3t² dt = 1
    torch.testing.assert_close(exact, torch.ones(2), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
#                                         CFG at scales <= 1
# ---------------------------------------------------------------------------------------------------


def null_calls(bundle, **options):
    seen = record_class_labels(bundle.transformer)
    try:
        sampling.sample(bundle, [1, 2], num_steps=2, progress=False, **options)
    finally:
        del bundle.transformer.forward  # the spy was an instance attribute
    return sum(int((labels == bundle.null_label).any()) for labels in seen)


@pytest.mark.parametrize("options, guided_calls", [
    ({"cfg_scale": 1.0, "family": "repa"}, 0),
    ({"cfg_scale": 1.2, "family": "repa"}, 2),
    ({"cfg_scale": 0.5, "family": "lightningdit"}, 0),  # LightningDiT: any scale <= 1 skips CFG
    ({"cfg_scale": 0.5}, 2),  # the package: a scale below 1 extrapolates (0: the unconditional model)
    ({"cfg_scale": 1.0}, 0),
])
def test_cfg_at_or_below_one(repa, options, guided_calls):
    assert null_calls(repa, solver="euler", **options) == guided_calls


def test_diffusers_skips_cfg_below_one_on_a_ddpm_model():
    bundle = tiny_bundle()
    assert null_calls(bundle, cfg_scale=0.5, family="diffusers") == 0 and null_calls(bundle, cfg_scale=0.5) == 2


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    """A tiny original DiT checkpoint (learned σ: 8 output channels for 4 latent ones), a DDPM-time bundle."""
    path = synthetic.save_checkpoint(tmp_path_factory.mktemp("dit") / "DiT-tiny.pt",
                                     synthetic.original_dit_state_dict(seed=3))
    return models.load(str(path), full=True, num_heads=synthetic.HEADS)


def dit_p_sample(bundle, x, t, t_prev, labels, cfg, step_noise):
    """One step of DiT's p_sample on its respaced process, written out from its gaussian_diffusion.py in float64:
    forward_with_cfg (CFG on 3 of 4 ε channels, the conditional σ channels), x₀ from ε unclipped, the posterior
    mean, and the log-variance frac·log β + (1 − frac)·log β̃ with frac = (v + 1)/2."""
    both = torch.cat([model_full(bundle, x, t, labels), model_full(bundle, x, t, torch.full_like(labels, bundle.null_label))])
    cond, uncond = both.double().chunk(2)
    eps = torch.cat([uncond[:, :3] + cfg * (cond[:, :3] - uncond[:, :3]), cond[:, 3:4]], 1)
    v = cond[:, 4:]
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    acp = torch.cumprod(1 - betas, 0)
    a_t, a_prev = acp[t], acp[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
    beta = 1 - a_t / a_prev  # the respaced β of this step
    x = x.double()
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * x
    if t_prev < 0:
        return mean
    log_variance = (v + 1) / 2 * beta.log() + (1 - (v + 1) / 2) * (beta * (1 - a_prev) / (1 - a_t)).log()
    return mean + (0.5 * log_variance).exp() * step_noise.double()


def model_full(bundle, x, t, labels):
    return bundle.transformer(x, timestep=torch.full((len(x),), float(t)), class_labels=labels).sample


def test_dit_samples_ddpm_with_its_learned_sigma_at_its_respaced_timesteps(dit):
    assert sampling.dit_timesteps(1000, 250)[:3] == [999, 995, 991] and sampling.dit_timesteps(1000, 3) == [999, 500, 0]
    assert len(sampling.dit_timesteps(1000, 250)) == 250 and sampling.dit_timesteps(1000, 1) == [0]
    conventions = sampling.sampler_conventions(dit, "dit")
    scheduler = sampling.learned_sigma_scheduler(dit, 3)
    generators = sampling.sample_generators(torch.arange(3), seed=5)
    x0 = torch.stack([torch.randn(4, 8, 8, generator=g) for g in generators])
    with torch.no_grad():
        got = sampling._denoise(dit, x0, LABELS, CFG, None, generators, conventions, scheduler)
        replay = sampling.sample_generators(torch.arange(3), seed=5)  # the same streams: initial noise, then a draw
        x = torch.stack([torch.randn(4, 8, 8, generator=g) for g in replay])  # per noisy step
        for t, t_prev in ((999, 500), (500, 0), (0, -1)):
            step_noise = torch.stack([torch.randn(4, 8, 8, generator=g) for g in replay]) if t_prev >= 0 else None
            x = dit_p_sample(dit, x.float(), t, t_prev, LABELS, CFG, step_noise)
    # diffusers' DDPMScheduler keeps β and ᾱ in float32, DiT in float64, and this random model's x₀ = (x − √(1−ᾱ)ε)/√ᾱ
    # at t = 999 (√ᾱ ≈ 0.006) puts pixels in the hundreds: float32 rounding reaches a few 1e-4 of them. A wrong
    # variance, timestep or guided channel moves the result by far more than 1e-3 of it
    assert x.abs().max() > 10
    torch.testing.assert_close(got, x.float(), rtol=1e-3, atol=1e-3)
    card = sampling.sampler_card(dit, num_samples=3, num_steps=250, cfg_scale=1.5, family="dit")
    assert (card["solver"], card["nfe"], card["cfg_channels"]) == ("ddpm-learned-sigma", 500, 3)


def test_learned_sigma_needs_sigma_channels_and_a_ddpm_model(sit, tmp_path):
    assert_refused(tiny_bundle(), tmp_path, {"family": "dit"}, r"predicts none .* solver='scheduler'")
    assert_refused(sit, tmp_path, {"solver": "ddpm-learned-sigma"}, r"samples DDPM-time models; .* is a flow model")
    images = sampling.sample(tiny_bundle(), [1], num_steps=2, cfg_scale=1.5, family="dit", solver="scheduler",
                             progress=False)
    assert images.shape[0] == 1


def test_the_table_of_defaults():
    table = sampling.FAMILY_SAMPLERS
    assert (table["repa"].solver, table["repa"].num_steps, table["repa"].cfg_scale) == ("euler", 50, 1.5)
    assert table["repa"].cfg_channels is None and table["repa"].low_cfg == "reject"
    assert (table["sit"].solver, table["sit"].cfg_channels, table["sit"].num_steps) == ("dopri5", 3, 249)
    light = table["lightningdit"]
    assert (light.guidance_interval, light.shift, light.cfg_channels, light.cfg_scale) == ((0.125, 1.0), 0.3, 3, 6.7)
    assert table["dit"].cfg_channels == 3 and table["diffusers"].cfg_channels is None
    assert all(f"\n    {family} " in sampling.sample.__doc__ for family in table)


# ---------------------------------------------------------------------------------------------------
#                               Bad options: one line, before any forward
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, match", [
    ({"solver": "rk4"}, r"solver must be one of .*got 'rk4'"),
    ({"solver": "Euler"}, r"solver must be one of .*lower case, got 'Euler'"),
    ({"family": "mdt"}, r"family must be one of \['diffusers', 'dit', 'lightningdit', 'repa', 'sit'\]"),
    ({"guidance_interval": (0.2, 1.5)}, r"0 <= low <= high <= 1 .*got \(0.2, 1.5\)"),
    ({"guidance_interval": (-0.1, 0.5)}, r"0 <= low <= high <= 1"),
    ({"guidance_interval": (0.7, 0.3)}, r"0 <= low <= high <= 1 .*got \(0.7, 0.3\)"),
    ({"guidance_interval": 0.5}, r"guidance_interval must be \(low, high\)"),
    ({"guidance_interval": (0.1, math.nan)}, r"guidance_interval must be \(low, high\)"),
    ({"shift": 0}, r"shift must be a number > 0 \(1.0: no shift"),
    ({"shift": -0.3}, r"shift must be a number > 0"),
    ({"cfg_channels": 5}, r"cfg_channels must be an int in 1..4"),
    ({"family": "repa", "cfg_scale": 0.5}, r"cfg_scale must be >= 1 with family 'repa'"),
    ({"family": "dit"}, r"family 'dit' samples DDPM-time models; .* use family 'sit', 'repa' or 'lightningdit'"),
    ({"solver": "sde", "num_steps": 1}, r"num_steps must be an int >= 2 for the sde solver"),
])
def test_bad_flow_options_fail_before_any_forward(sit, tmp_path, options, match):
    assert_refused(sit, tmp_path, options, match)


@pytest.mark.parametrize("options, match", [
    ({"solver": "sde"}, r"solver apply to flow models .* DDPM-time model: leave them unset \(its solvers: "),
    ({"shift": 0.3, "guidance_interval": (0.1, 1.0)}, r"guidance_interval, shift apply to flow models"),
    ({"family": "sit"}, r"family 'sit' samples flow models; tiny is not one: use family 'dit' or 'diffusers'"),
    ({"cfg_channels": 2}, r"cfg_channels must be an int in 1..1"),
])
def test_flow_options_on_a_ddpm_model_fail(tmp_path, options, match):
    assert_refused(tiny_bundle(), tmp_path, options, match)


def assert_refused(bundle, tmp_path, options, match, error=ValueError):
    calls = []
    bundle.transformer.register_forward_pre_hook(lambda *args: calls.append(1))
    arguments = {"num_steps": 2, "progress": False, "output_dir": tmp_path / "png"} | options
    with pytest.raises(error, match=match) as raised:
        sampling.sample(bundle, [0, 1], **arguments)
    one_line(raised)
    assert calls == [] and not (tmp_path / "png").exists()


@pytest.mark.skipif(flow.has_torchdiffeq(), reason="torchdiffeq is installed")
def test_dopri5_without_torchdiffeq_names_the_install(sit, tmp_path):
    assert_refused(sit, tmp_path, {"family": "sit"}, r"needs torchdiffeq: pip install torchdiffeq", ModuleNotFoundError)
    with pytest.raises(ModuleNotFoundError, match="pip install torchdiffeq"):
        flow.dopri5(lambda x, t: x, torch.zeros(1), torch.linspace(0, 1, 3))


def test_dopri5_refuses_step_schedules_of_a_mask(sit, tmp_path, monkeypatch):
    monkeypatch.setattr(flow, "has_torchdiffeq", lambda: True)
    mask = sampling.masks.coordinate_mask([0], sit.hidden_size)
    assert_refused(sit, tmp_path, {"solver": "dopri5", "mask": mask, "schedule": "first"},
                   r"the 'first' mask schedule needs fixed evaluation times, and dopri5 picks its own")


@pytest.mark.parametrize("argv, match", [
    (["--guidance-interval", "0.6", "0.2"], r"0 <= low <= high <= 1"),
    (["--guidance-interval", "0.2", "1.5"], r"0 <= low <= high <= 1"),
    (["--guidance-interval", "-1", "0.5"], r"must be a finite number >= 0"),
    (["--shift", "0"], r"shift must be a number > 0"),
    (["--solver", "rk4"], r"invalid choice: 'rk4'"),
    (["--family", "mdt"], r"invalid choice: 'mdt'"),
    (["--cfg-channels", "0"], r"must be a finite number >= 1"),
])
def test_sampling_cli_refuses_bad_sampler_options_before_loading(tmp_path, capsys, monkeypatch, argv, match):
    monkeypatch.setattr(sampling, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as exit_:
        sampling.main(["mnist-dit", "--num-samples", "4", "--npz", str(tmp_path / "s.npz")] + argv)
    assert exit_.value.code == 2 and list(tmp_path.iterdir()) == []
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("argv, expected", [
    (["--family", "lightningdit"], {"num_steps": 249, "cfg_scale": 6.7, "family": "lightningdit"}),
    (["--family", "repa", "--steps", "7", "--solver", "repa-heun", "--guidance-interval", "0", "0.7"],
     {"num_steps": 7, "cfg_scale": 1.5, "solver": "repa-heun", "guidance_interval": [0.0, 0.7]}),
    ([], {"num_steps": 50, "cfg_scale": 4.0, "family": None, "shift": None, "cfg_channels": None}),
])
def test_sampling_cli_passes_the_family_and_its_defaults(tmp_path, monkeypatch, argv, expected, sit):
    seen = {}
    flow_family = "--family" in argv  # the flow families sample flow models (the card checks it before sampling)
    monkeypatch.setattr(sampling, "load", lambda *a, **k: sit if flow_family else tiny_bundle())
    monkeypatch.setattr(sampling, "sample_sharded", lambda bundle, labels, **kwargs: seen.update(kwargs))
    sampling.main(["mnist-dit", "--num-samples", "4", "--npz", str(tmp_path / "s.npz")] + argv)
    assert {key: seen[key] for key in expected} == expected
