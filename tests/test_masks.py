"""Masks on c = y + t: construction, schedules, the hook's equivalence with editing the weights, clean exit."""

import contextlib
import copy

import pytest
import torch
from conftest import FLOAT32_DRIFT

from bottleneck_utils import masks
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep
from bottleneck_utils.models import Bundle, block_embedders
from bottleneck_utils.sampling import sample

STEPS = 4


def forward(bundle, labels, timestep=500):
    x = torch.randn(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((len(labels),), timestep)
    return bundle.transformer(x, timestep=t, class_labels=torch.as_tensor(labels)).sample


def weight_edited(bundle: Bundle, coordinates) -> Bundle:
    """A copy of the bundle with c's coordinates zeroed in the weights: label-table columns, linear_2 rows."""
    edited = copy.deepcopy(bundle)
    with torch.no_grad():
        for embedder in block_embedders(edited.transformer):
            embedder.class_embedder.embedding_table.weight[:, coordinates] = 0
            embedder.timestep_embedder.linear_2.weight[coordinates] = 0
            embedder.timestep_embedder.linear_2.bias[coordinates] = 0
    edited.embedder = block_embedders(edited.transformer)[0]
    return edited


def spy_on_c(bundle, seen):
    """Registers (after any pruning hook) a hook that records (timestep, labels, c) of block 0's embedder."""
    def hook(module, args, output):
        seen.append((args[0].clone(), args[1].clone(), output.clone()))
    return block_embedders(bundle.transformer)[0].register_forward_hook(hook)


def a_tail_mask(bundle, granularity="global"):
    magnitudes = masks.reference_magnitudes(bundle, STEPS, granularity)
    return masks.tail_mask(bundle, magnitudes.median().item(), num_steps=STEPS, granularity=granularity)


# ---------------------------------------------------------------------------------------------------
#                                   The hook equals editing the weights
# ---------------------------------------------------------------------------------------------------


def test_zeroing_c_equals_zeroing_the_weights(bundle):
    coordinates = [0, 3, 7, 15]
    mask = masks.coordinate_mask(coordinates, bundle.hidden_size)
    edited = weight_edited(bundle, coordinates)
    labels = [0, 4, bundle.null_label, 2]
    with masks.prune(bundle, mask):
        hooked = forward(bundle, labels)
    # same batch and shapes, c identical: only float32 rounding of the zeroed rows may differ (~1e-7)
    assert torch.allclose(hooked, forward(edited, labels), rtol=0, atol=1e-6)
    assert not torch.allclose(hooked, forward(bundle, labels), atol=1e-3)  # the mask does change the output


def test_masked_sampling_equals_sampling_the_edited_model(bundle):
    coordinates = torch.arange(0, bundle.hidden_size, 3)
    mask = masks.coordinate_mask(coordinates, bundle.hidden_size)
    pruned = sample(bundle, [0, 1, 2], num_steps=STEPS, seed=2, mask=mask, progress=False)
    edited = sample(weight_edited(bundle, coordinates), [0, 1, 2], num_steps=STEPS, seed=2, progress=False)
    # same batch, 4 steps: the rounding of the forward above, compounded over the steps (conftest)
    assert torch.allclose(pruned, edited, rtol=0, atol=FLOAT32_DRIFT)
    unmasked = sample(bundle, [0, 1, 2], num_steps=STEPS, seed=2, progress=False)
    assert (pruned - unmasked).abs().max() > 10 * FLOAT32_DRIFT  # the mask is far outside that tolerance


def test_every_block_and_the_final_layer_are_hooked(bundle):
    calls = []
    mask = masks.coordinate_mask([1], bundle.hidden_size)
    with masks.prune(bundle, mask):
        modules = masks.conditioning_modules(bundle)
        handles = [m.register_forward_hook(lambda m, a, o: calls.append(o[:, 1].clone())) for m in modules]
        forward(bundle, [0, 1])
    for handle in handles:
        handle.remove()
    assert len(modules) == bundle.transformer.config.num_layers
    assert len(calls) == bundle.transformer.config.num_layers + 1  # block 0's embedder runs again at the end
    assert all(torch.equal(c, torch.zeros(2)) for c in calls)


def test_model_is_unchanged_on_exit_and_after_an_exception(bundle):
    before = {k: v.clone() for k, v in bundle.transformer.state_dict().items()}
    reference = forward(bundle, [0, 1])
    mask = masks.coordinate_mask(torch.arange(bundle.hidden_size // 2), bundle.hidden_size)
    with pytest.raises(RuntimeError, match="boom"), masks.prune(bundle, mask):
        assert not torch.equal(forward(bundle, [0, 1]), reference)
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in bundle.transformer.modules())
    assert all(torch.equal(before[k], v) for k, v in bundle.transformer.state_dict().items())
    assert torch.equal(forward(bundle, [0, 1]), reference)


# ---------------------------------------------------------------------------------------------------
#                                        Building the masks
# ---------------------------------------------------------------------------------------------------


def test_tail_and_head_split_the_coordinates_at_tau(bundle):
    global_magnitude = masks.reference_magnitudes(bundle, STEPS, "global")  # (1, D)
    t0 = first_sampling_timestep(bundle, STEPS)
    # the same float32 vectors and mean: equal up to rounding (allclose's default rtol 1e-5 is ample)
    assert torch.allclose(global_magnitude[0], conditional_vectors(bundle, timesteps=t0).mean(0).abs())
    tau = global_magnitude.median().item()
    tail = masks.tail_mask(bundle, tau, num_steps=STEPS, granularity="global")
    head = masks.head_mask(bundle, tau, num_steps=STEPS, granularity="global")
    exactly_tau = global_magnitude == tau
    assert torch.equal(tail.removed ^ head.removed ^ exactly_tau, torch.ones_like(exactly_tau))
    assert tail.removed_count == (global_magnitude < tau).sum().item()
    assert masks.tail_mask(bundle, 0.0, num_steps=STEPS).removed_count == 0


def test_per_sample_masks_have_one_row_per_label_including_null(bundle):
    mask = a_tail_mask(bundle, "per-sample")
    assert mask.removed.shape == (bundle.num_classes + 1, bundle.hidden_size)
    t0 = first_sampling_timestep(bundle, STEPS)
    c_null = conditional_vectors(bundle, [bundle.null_label], timesteps=t0, include_null=True)[0]
    tau = masks.reference_magnitudes(bundle, STEPS, "per-sample").median().item()
    assert torch.equal(mask.removed[-1], c_null.abs().cpu() < tau)
    assert mask.removed_count == mask.removed[:-1].sum(-1).double().mean().item()  # the same float64 mean


def test_topk_and_random_control(bundle):
    top = masks.topk_mask(bundle, 5, num_steps=STEPS, granularity="per-sample")
    magnitudes = masks.reference_magnitudes(bundle, STEPS, "per-sample")
    assert (top.removed.sum(-1) == 5).all()
    kept_max = magnitudes.masked_fill(top.removed, -1).max(-1).values  # (rows,)
    removed_min = magnitudes.masked_fill(~top.removed, float("inf")).min(-1).values
    assert (removed_min >= kept_max).all()
    tail = a_tail_mask(bundle, "per-sample")
    control = masks.random_mask(tail, seed=1)
    assert torch.equal(control.removed.sum(-1), tail.removed.sum(-1))
    assert not torch.equal(control.removed, tail.removed)
    assert torch.equal(masks.random_mask(tail, seed=1).removed, control.removed)
    assert not torch.equal(masks.random_mask(tail, seed=2).removed, control.removed)


# ---------------------------------------------------------------------------------------------------
#                               Schedules, granularity and the null policy
# ---------------------------------------------------------------------------------------------------


def test_schedule_steps():
    assert masks.Schedule("every").active_steps(4).tolist() == [True] * 4
    assert masks.Schedule("first").active_steps(4).tolist() == [True, False, False, False]
    assert masks.Schedule("last", 3).active_steps(4).tolist() == [False, True, True, True]
    with pytest.raises(ValueError, match="k=5"):
        masks.Schedule("last", 5).active_steps(4)
    with pytest.raises(ValueError, match="needs a step count"):
        masks.Schedule("last")
    with pytest.raises(ValueError, match="schedule must be one of"):
        masks.Schedule("sometimes")


@pytest.mark.parametrize("schedule", [masks.Schedule("first"), masks.Schedule("last", 2), masks.Schedule("every")])
def test_mask_is_applied_exactly_at_the_scheduled_steps(bundle, schedule):
    mask = masks.coordinate_mask([2, 5], bundle.hidden_size)
    seen = []
    handle = None
    with masks.prune(bundle, mask, schedule, timesteps=_timesteps(bundle)):
        handle = spy_on_c(bundle, seen)
        sample(bundle, [0, 1], num_steps=STEPS, cfg_scale=1.0, progress=False)
    handle.remove()
    calls_per_step = len(seen) // STEPS  # block 0's embedder runs in block 0 and again in the final layer
    per_step = [(c[:, [2, 5]] == 0).all().item() for _, _, c in seen[::calls_per_step]]
    assert per_step == schedule.active_steps(STEPS).tolist()


def _timesteps(bundle):
    bundle.scheduler.set_timesteps(STEPS)
    return bundle.scheduler.timesteps.clone()


@pytest.mark.parametrize("null_policy", ["mask", "leave"])
def test_per_sample_rows_and_null_policy(bundle, null_policy):
    mask = a_tail_mask(bundle, "per-sample")
    seen = []
    with masks.prune(bundle, mask, null_policy=null_policy):
        handle = spy_on_c(bundle, seen)
        sample(bundle, [3, 0], num_steps=1, cfg_scale=4.0, progress=False)
    handle.remove()
    _, labels, c = seen[0]
    assert labels.tolist() == [3, 0, bundle.null_label, bundle.null_label]
    zeros = c == 0  # (4, D)
    assert torch.equal(zeros[0], mask.removed[3]) and torch.equal(zeros[1], mask.removed[0])
    expected_null = mask.removed[-1] if null_policy == "mask" else torch.zeros_like(mask.removed[-1])
    assert torch.equal(zeros[2], expected_null)


# ---------------------------------------------------------------------------------------------------
#                                           Bad input
# ---------------------------------------------------------------------------------------------------


def test_bad_input_fails_before_work(bundle):
    calls = []
    bundle.transformer.register_forward_pre_hook(lambda *args: calls.append(1))
    wrong_length = masks.Mask(torch.zeros(1, bundle.hidden_size + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="has length"):
        sample(bundle, [0], num_steps=2, mask=wrong_length, progress=False)
    with pytest.raises(ValueError, match="k=9"):
        sample(bundle, [0], num_steps=2, mask=a_tail_mask(bundle), schedule=masks.Schedule("last", 9), progress=False)
    with pytest.raises(ValueError, match="null_policy"):
        sample(bundle, [0], num_steps=2, mask=a_tail_mask(bundle), null_policy="sometimes", progress=False)
    with pytest.raises(ValueError, match="tau must be a number >= 0"):
        masks.tail_mask(bundle, -0.1, num_steps=2)
    with pytest.raises(ValueError, match="null label"):
        masks.check_mask(bundle, masks.Mask(torch.zeros(3, bundle.hidden_size, dtype=torch.bool)))
    with pytest.raises(ValueError, match="hidden size"):
        masks.coordinate_mask(torch.zeros(bundle.hidden_size - 1, dtype=torch.bool), bundle.hidden_size)
    assert calls == []


@pytest.mark.parametrize("granularity", ["global", "per-sample"])
def test_threshold_for_fraction_removes_that_share(bundle, granularity):
    for fraction in (0.25, 0.3894, 0.9):
        tau = masks.threshold_for_fraction(bundle, fraction, num_steps=STEPS, granularity=granularity)
        mask = masks.tail_mask(bundle, tau, num_steps=STEPS, granularity=granularity)
        rows = 1 if granularity == "global" else bundle.num_classes
        # τ can only remove whole coordinates: the share is off by at most half a coordinate of all rows
        assert mask.removed_fraction == pytest.approx(fraction, abs=0.5 / (rows * bundle.hidden_size) + 1e-12)
    with pytest.raises(ValueError, match="strictly between"):
        masks.threshold_for_fraction(bundle, 1.0, num_steps=STEPS)


def test_continuous_condition_models_take_global_masks_and_nan_is_null(bundle):
    from bottleneck_utils.continuous import ConditionRange, install_condition_embedders

    condition = ConditionRange("temperature", 1.0, 4.0)
    install_condition_embedders(block_embedders(bundle.transformer), condition)
    bundle.condition, bundle.num_classes = condition, 0
    bundle.embedder = block_embedders(bundle.transformer)[0]
    mask = masks.tail_mask(bundle, 0.05, num_steps=STEPS, granularity="global")
    assert 0 < mask.removed_count < bundle.hidden_size
    with pytest.raises(ValueError, match="continuous condition"):
        masks.tail_mask(bundle, 0.05, num_steps=STEPS, granularity="per-sample")
    with pytest.raises(ValueError, match="global mask"):
        masks.check_mask(bundle, masks.Mask(torch.zeros(3, bundle.hidden_size, dtype=torch.bool)))
    seen = []
    with masks.prune(bundle, mask, null_policy="leave"):
        handle = spy_on_c(bundle, seen)
        sample(bundle, [1.5, 3.0], num_steps=1, cfg_scale=2.0, progress=False)
    handle.remove()
    _, conditions, c = seen[0]
    assert torch.isnan(conditions[2:]).all() and conditions[:2].tolist() == [1.5, 3.0]
    assert torch.equal(c[:2] == 0, mask.removed.expand(2, -1)) and not (c[2:] == 0).any()


@pytest.mark.parametrize("granularity", ["global", "per-sample"])
def test_mask_boundaries(bundle, granularity):
    """τ = 0 and τ = ∞, k = 0 and k = D: nothing or everything, with no coordinate lost at the edges."""
    rows = 1 if granularity == "global" else bundle.num_classes + 1
    real_rows = rows if granularity == "global" else rows - 1  # the null row is not a class
    nothing = torch.zeros(rows, bundle.hidden_size, dtype=torch.bool)
    everything = ~nothing
    build = {"num_steps": STEPS, "granularity": granularity}
    assert torch.equal(masks.tail_mask(bundle, 0.0, **build).removed, nothing)  # |cᵢ| < 0 never holds
    assert torch.equal(masks.tail_mask(bundle, float("inf"), **build).removed, everything)
    assert torch.equal(masks.head_mask(bundle, 0.0, **build).removed, everything)  # c has no exact zero here
    assert torch.equal(masks.head_mask(bundle, float("inf"), **build).removed, nothing)
    assert torch.equal(masks.topk_mask(bundle, 0, **build).removed, nothing)
    assert torch.equal(masks.topk_mask(bundle, bundle.hidden_size, **build).removed, everything)
    smallest = masks.threshold_for_fraction(bundle, 1e-9, **build)  # a share below one coordinate removes one
    assert masks.tail_mask(bundle, smallest, **build).removed[:real_rows].sum().item() == 1
    largest = masks.threshold_for_fraction(bundle, 1 - 1e-9, **build)  # and one just below 1 keeps one
    assert masks.tail_mask(bundle, largest, **build).removed[:real_rows].sum().item() == real_rows * bundle.hidden_size - 1


@pytest.mark.parametrize("granularity", ["global", "per-sample"])
def test_threshold_for_energy_share_removes_that_share_of_the_squared_norm(bundle, granularity):
    for share in (0.01, 0.2):
        tau = masks.threshold_for_energy_share(bundle, share, num_steps=STEPS, granularity=granularity)
        mask = masks.tail_mask(bundle, tau, num_steps=STEPS, granularity=granularity)
        removed = masks.removed_energy_share(bundle, mask, num_steps=STEPS)
        # τ sits between two magnitudes, so the share is met to within the square of one coordinate of a row
        largest_step = masks.reference_magnitudes(bundle, STEPS, granularity).max().item() ** 2
        total = (masks.reference_magnitudes(bundle, STEPS, granularity).double() ** 2).sum().item()
        assert removed <= share and share - removed <= largest_step / total
    with pytest.raises(ValueError, match="strictly between"):
        masks.threshold_for_energy_share(bundle, 0.0, num_steps=STEPS)


def test_energy_share_of_no_mask_and_of_every_coordinate(bundle):
    magnitudes = masks.reference_magnitudes(bundle, STEPS, "global")
    everything = masks.Mask(torch.ones_like(magnitudes, dtype=torch.bool), "all")
    nothing = masks.Mask(torch.zeros_like(magnitudes, dtype=torch.bool), "none")
    assert masks.removed_energy_share(bundle, everything, num_steps=STEPS) == pytest.approx(1.0, rel=1e-12)  # a ratio of equal float64 sums
    assert masks.removed_energy_share(bundle, nothing, num_steps=STEPS) == 0.0


def test_tail_overlap_is_one_at_t0_and_lower_where_the_tail_moves(bundle):
    t0 = first_sampling_timestep(bundle, STEPS)
    tau = masks.threshold_for_fraction(bundle, 0.4, num_steps=STEPS, granularity="per-sample")
    mask = masks.tail_mask(bundle, tau, num_steps=STEPS, granularity="per-sample")
    overlap = masks.tail_overlap_over_steps(bundle, mask, [t0, 0.0])
    assert overlap[0].item() == 1.0  # recomputed at t₀ itself: the same set (no ties in float |c|)
    assert 0.0 <= overlap[1].item() < 1.0  # at the data end t differs, and so does the tail of a random-init c


# ---------------------------------------------------------------------------------------------------
#                               A tail recomputed at every call
# ---------------------------------------------------------------------------------------------------


def _hooked_c(bundle, mask, labels, timestep, null_policy="mask"):
    """Block 0's c (B, D) in one forward at ``timestep``, under ``prune(mask)`` (None: unpruned), and the output."""
    seen = []
    with masks.prune(bundle, mask, null_policy=null_policy) if mask else contextlib.nullcontext():
        handle = spy_on_c(bundle, seen)
        output = forward(bundle, labels, timestep)
    handle.remove()
    return seen[0][2], output


def test_recomputed_tail_is_the_fixed_tail_at_t0(bundle):
    mask = a_tail_mask(bundle, "per-sample")
    recomputed = masks.recomputed(mask)
    t0 = first_sampling_timestep(bundle, STEPS)
    labels = [3, 0, bundle.null_label, 1]
    fixed_c, fixed_output = _hooked_c(bundle, mask, labels, t0)
    recomputed_c, recomputed_output = _hooked_c(bundle, recomputed, labels, t0)
    assert torch.equal((fixed_c == 0), mask.removed[labels])  # the fixed mask does zero its t₀ tail here
    assert torch.equal(recomputed_c, fixed_c) and torch.equal(recomputed_output, fixed_output)  # same ops, same bits
    # through the sampler: applied at t₀ only, the two masks give the same images, bit for bit
    runs = [sample(bundle, [0, 1, 2], num_steps=STEPS, seed=2, mask=m, schedule="first", progress=False)
            for m in (mask, recomputed)]
    assert torch.equal(runs[0], runs[1])
    assert recomputed.removed_count == mask.removed_count and recomputed.name == f"{mask.name} recomputed"


@pytest.mark.parametrize("granularity", ["global", "per-sample"])
def test_recomputed_tail_zeroes_the_smallest_of_each_calls_own_c(bundle, granularity):
    mask = a_tail_mask(bundle, granularity)
    labels = torch.tensor([3, 0, 4, 1, bundle.null_label])
    c, _ = _hooked_c(bundle, None, labels, timestep=0)  # the data end: t, and so the tail, differs from t₀
    pruned, _ = _hooked_c(bundle, masks.recomputed(mask), labels, timestep=0)
    zeroed = pruned == 0  # (B, D); the unpruned c has no exact zero
    assert not (c == 0).any()
    assert torch.equal(zeroed.sum(-1), mask.table(bundle.num_classes)[labels].sum(-1))  # each row's t₀ count
    largest_zeroed = c.abs().masked_fill(~zeroed, -1.0).max(-1).values  # (B,)
    smallest_kept = c.abs().masked_fill(zeroed, float("inf")).min(-1).values
    assert (largest_zeroed < smallest_kept).all()  # exactly the smallest |cᵢ| of this call's c
    assert torch.equal(pruned[~zeroed], c[~zeroed])  # the rest of c untouched
    fixed, _ = _hooked_c(bundle, mask, labels, timestep=0)
    assert not torch.equal(zeroed, fixed == 0)  # the tail moved here: the fixed mask zeroes other coordinates


@pytest.mark.parametrize("null_policy", ["mask", "leave"])
def test_recomputed_tail_and_null_policy(bundle, null_policy):
    mask = a_tail_mask(bundle, "per-sample")
    seen = []
    with masks.prune(bundle, masks.recomputed(mask), null_policy=null_policy):
        handle = spy_on_c(bundle, seen)
        sample(bundle, [3, 0], num_steps=STEPS, cfg_scale=4.0, progress=False)
    handle.remove()
    null_count = mask.removed[-1].sum().item()
    assert null_count > 0  # otherwise "leave" and "mask" would look alike
    expected = [mask.removed[3].sum().item(), mask.removed[0].sum().item()] + 2 * [
        null_count if null_policy == "mask" else 0]
    for _, labels, c in seen:  # every call, at every step
        assert labels.tolist() == [3, 0, bundle.null_label, bundle.null_label]
        assert (c == 0).sum(-1).tolist() == expected


def test_recomputed_refuses_what_is_not_a_mask(bundle):
    with pytest.raises(TypeError, match="recomputed takes a masks.Mask"):
        masks.recomputed(torch.zeros(1, bundle.hidden_size, dtype=torch.bool))
    with pytest.raises(TypeError, match="masks.recomputed"):
        masks.Mask(torch.zeros(1, bundle.hidden_size, dtype=torch.bool), recompute=1)
    mask = masks.recomputed(a_tail_mask(bundle))
    assert masks.recomputed(mask) is mask  # recomputing twice is the same mask
