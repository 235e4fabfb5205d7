"""The ODE "scheduler" of flow models (SiT, REPA, the ``mnist-sit`` organism): a time grid and an integrator.

A flow model predicts a velocity v(x, t) along the linear path between noise and data; sampling integrates
dx/dt = v from the noise end of [0, 1] to the data end. SiT puts noise at t = 0 and REPA at t = 1 (its sampler runs
t from 1 to 0); both feed t unscaled to the timestep sinusoid.

The grid has ``num_steps`` equal intervals, ``linspace(noise_time, 1 − noise_time, num_steps + 1)``:
- SiT's ``sample.py`` builds ``linspace(0, 1, N)`` for its ODE, so its ``--num-sampling-steps N`` is our
  ``num_steps = N − 1``; its default integrator is the adaptive dopri5 (:func:`dopri5`, with torchdiffeq), the
  fixed-step ones are ``euler`` and ``heun`` (torchdiffeq's ``heun2``).
- REPA's ``euler_sampler`` uses ``linspace(1, 0, num_steps + 1)``, the same as ours; its Heun variant
  (``"repa-heun"``) skips the correction on the last interval, where ``"heun"`` corrects every interval.
- ``"sde"`` is SiT's and REPA's Euler–Maruyama sampler (:meth:`FlowODE.sde_step`): ``num_steps − 1`` noisy steps
  over ``linspace`` from the noise end to 0.04 short of the data end, then one noise-free "mean" step of 0.04. SiT's
  SDE ``--num-sampling-steps N`` and REPA's ``--num-steps N`` are our ``num_steps = N``.
- ``shift`` warps the grid as LightningDiT does, s ↦ shift·s / (1 + (shift − 1)·s) with s the distance from the
  noise end (0.3 crowds the steps near the noise); 1.0 leaves it alone.

``timesteps`` lists the times at which the model is evaluated, in order (Euler, REPA-Heun and SDE: the grid less
its data end; Heun: the whole grid, the data end only in the last correction). :func:`bottleneck_utils.masks.prune`
recognises a step by these values, so "first" masks the evaluations at the noise end and "last k" the final k
evaluation times.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import numbers
from dataclasses import dataclass, field

import torch

METHODS = ("euler", "heun", "repa-heun", "sde")
SDE_LAST_STEP = 0.04  # SiT's --last-step-size and REPA's t_steps[-2]: the noise-free last step of the SDE
DOPRI5_TOLERANCES = {"atol": 1e-6, "rtol": 1e-3}  # SiT's --atol and --rtol
TORCHDIFFEQ_HINT = "pip install torchdiffeq"


@dataclass
class FlowODE:
    """The integrator of a flow model, in its family's time convention.

    Attributes:
        noise_time: where the noise sits: 0.0 (SiT, LightningDiT, ``mnist-sit``) or 1.0 (REPA).
        method: ``"euler"``, ``"heun"``, ``"repa-heun"`` or ``"sde"`` (see the module docstring).
        shift: LightningDiT's timestep shift of the grid (> 0; 1.0: none).
        grid: the (num_steps + 1,) float32 time grid, set by :meth:`set_timesteps`.
        grid64: the same grid in float64, on which guidance intervals are decided (REPA compares float64 times).
    """

    noise_time: float = 0.0
    method: str = "heun"
    shift: float = 1.0
    grid: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    grid64: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.float64))

    def __setattr__(self, name: str, value) -> None:
        """Checks ``noise_time``, ``method`` and ``shift`` whenever they are set, at construction or later (a bundle's
        ``scheduler.method = "Heun"`` is refused, rather than integrated as Euler)."""
        if name == "noise_time" and value not in (0.0, 1.0):
            raise ValueError(f"noise_time must be 0.0 (SiT) or 1.0 (REPA), got {value!r}")
        if name == "method" and value not in METHODS:
            raise ValueError(f"the flow solver (method) must be one of {METHODS}, lower case, got {value!r} (the "
                             "adaptive dopri5 is flow.dopri5, sample(solver='dopri5'))")
        if name == "shift":
            check_shift(value)
        super().__setattr__(name, value)

    def set_timesteps(self, num_steps: int) -> None:
        """Sets the grid of ``num_steps`` intervals from the noise end to the data end."""
        low = 2 if self.method == "sde" else 1
        if not isinstance(num_steps, int) or num_steps < low:
            what = "a positive int" if low == 1 else "an int >= 2 for the sde solver (noisy steps, then the last step)"
            raise ValueError(f"num_steps must be {what}, got {num_steps!r}")
        self.grid = self._grid(num_steps, torch.float32)
        self.grid64 = self._grid(num_steps, torch.float64)

    def _grid(self, num_steps: int, dtype: torch.dtype) -> torch.Tensor:
        end = 1 - self.noise_time
        if self.method == "sde":  # num_steps − 1 Euler–Maruyama steps to 0.04 short of the data end, then the last
            stop = 1 - SDE_LAST_STEP if self.noise_time == 0 else SDE_LAST_STEP
            grid = torch.cat([torch.linspace(self.noise_time, stop, num_steps, dtype=dtype),
                              torch.tensor([end], dtype=dtype)])
        else:
            grid = torch.linspace(self.noise_time, end, num_steps + 1, dtype=dtype)
        if self.shift == 1:
            return grid
        s = (grid - self.noise_time).abs()  # distance from the noise end, 0 → 1
        shifted = self.shift * s / (1 + (self.shift - 1) * s)
        return shifted if self.noise_time == 0 else 1 - shifted

    @property
    def timesteps(self) -> torch.Tensor:
        """The times at which the model is evaluated, in sampling order."""
        if len(self.grid) == 0:
            raise ValueError("call set_timesteps(num_steps) before reading the timesteps")
        return self.grid if self.method == "heun" else self.grid[:-1]

    def integrate(self, velocity, x: torch.Tensor, *, guided=None, noise=None) -> torch.Tensor:
        """Integrates dx/dt = velocity(x, t) over the grid from noise x (B, C, H, W); returns the data end.

        Euler: x ← x + h·v(x, t). Heun: x' = x + h·v(x, t), then x ← x + h·(v(x, t) + v(x', t + h)) / 2 (REPA-Heun:
        not on the last interval). SDE: :meth:`sde_step`.

        Args:
            velocity: ``velocity(x, t)``, or ``velocity(x, t, guide=...)`` when ``guided`` is given.
            x: the starting noise.
            guided: optional predicate of a step's start time (float64): whether CFG applies in that step. As in
                REPA's sampler, the decision at the start also governs the step's Heun correction.
            noise: for ``"sde"``: a function returning a standard normal draw shaped like x.
        """
        if self.method == "sde" and noise is None:
            raise ValueError("the sde solver draws noise at every step: pass noise=")
        last = len(self.grid) - 2
        for i, (t, t_next) in enumerate(zip(self.grid[:-1], self.grid[1:])):
            v_at = velocity if guided is None else functools.partial(velocity, guide=guided(float(self.grid64[i])))
            if self.method == "sde":
                x = self.sde_step(v_at, x, t, t_next, noise() if i < last else None)
            else:
                correct = self.method == "heun" or self.method == "repa-heun" and i < last
                x = self.ode_step(v_at, x, t, t_next, correct)
        return x

    @staticmethod
    def ode_step(velocity, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, correct: bool) -> torch.Tensor:
        """One Euler step from t to t_next, with Heun's trapezoidal correction when ``correct``."""
        step = t_next - t
        v = velocity(x, t)
        x_next = x + step * v
        if correct:
            x_next = x + step * (v + velocity(x_next, t_next)) / 2
        return x_next

    def sde_step(self, velocity, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                 eps: torch.Tensor | None) -> torch.Tensor:
        """One Euler–Maruyama step of SiT's and REPA's SDE; ``eps`` None: the noise-free last ("mean") step.

        With s the distance from the noise end and ds = |t_next − t|, the SDE is dx = [(1 + s)·v_s − x] ds +
        √(2(1 − s)) dW, v_s the velocity towards the data (SiT's drift v + (1 − s)·score with the score
        (s·v_s − x)/(1 − s) of the linear path and diffusion 1 − s; REPA's v − t·score with its diffusion 2t,
        mirrored). The step is x + drift·ds + √(2(1 − s)·ds)·eps.
        """
        direction = 1 - 2 * self.noise_time  # +1 when t runs towards the data, −1 for REPA
        s, ds = (t - self.noise_time).abs(), (t_next - t).abs()
        mean = x + ((1 + s) * direction * velocity(x, t) - x) * ds
        return mean if eps is None else mean + torch.sqrt(2 * (1 - s) * ds) * eps


def check_shift(shift) -> float:
    """``shift`` if it is a finite number > 0, else a ValueError naming the convention."""
    if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a number > 0 (1.0: no shift; LightningDiT samples with 0.3), got {shift!r}")
    return shift


def dopri5(velocity, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """SiT's default ODE solver: torchdiffeq's adaptive dopri5 over ``grid`` (its output times) with SiT's
    tolerances; returns the data end. ``velocity(x, t)`` is evaluated at the solver's own times.

    Raises:
        ModuleNotFoundError: torchdiffeq is not installed (it is optional), naming the install command.
    """
    try:
        from torchdiffeq import odeint
    except ImportError:
        raise ModuleNotFoundError(f"the dopri5 solver (SiT's default) needs torchdiffeq: {TORCHDIFFEQ_HINT}") from None
    return odeint(lambda t, x_t: velocity(x_t, t), x, grid.to(x.device), method="dopri5", **DOPRI5_TOLERANCES)[-1]


def has_torchdiffeq() -> bool:
    """Whether the optional torchdiffeq (the dopri5 solver) is installed."""
    return importlib.util.find_spec("torchdiffeq") is not None
