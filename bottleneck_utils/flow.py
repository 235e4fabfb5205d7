"""The ODE "scheduler" of flow models (SiT, REPA, the ``mnist-sit`` organism): a time grid and an integrator.

A flow model predicts a velocity v(x, t) along the linear path between noise and data; sampling integrates
dx/dt = v from the noise end of [0, 1] to the data end. SiT puts noise at t = 0 and REPA at t = 1 (its sampler runs
t from 1 to 0); both feed t unscaled to the timestep sinusoid.

The grid has ``num_steps`` equal intervals, ``linspace(noise_time, 1 − noise_time, num_steps + 1)``:
- SiT's ``sample.py`` builds ``linspace(0, 1, N)`` for its ODE, so its ``--num-sampling-steps N`` is our
  ``num_steps = N − 1``; its default integrator is the adaptive dopri5, ours are its fixed-step ``euler`` and
  ``heun2`` (torchdiffeq names).
- REPA's ``euler_sampler`` uses ``linspace(1, 0, num_steps + 1)``, the same as ours; its Heun variant skips the
  correction on the last interval, ours corrects every interval (torchdiffeq's ``heun2``).

``timesteps`` lists the times at which the model is evaluated, in order (Euler: the grid less its data end; Heun:
the whole grid, the data end only in the last correction). :func:`bottleneck_utils.masks.prune` recognises a step
by these values, so "first" masks the evaluations at the noise end and "last k" the final k evaluation times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

METHODS = ("euler", "heun")


@dataclass
class FlowODE:
    """The integrator of a flow model, in its family's time convention.

    Attributes:
        noise_time: where the noise sits: 0.0 (SiT, LightningDiT, ``mnist-sit``) or 1.0 (REPA).
        method: ``"euler"`` or ``"heun"``.
        grid: the (num_steps + 1,) time grid, set by :meth:`set_timesteps`.
    """

    noise_time: float = 0.0
    method: str = "heun"
    grid: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def __setattr__(self, name: str, value) -> None:
        """Checks ``noise_time`` and ``method`` whenever they are set, at construction or later (a bundle's
        ``scheduler.method = "Heun"`` is refused, rather than integrated as Euler)."""
        if name == "noise_time" and value not in (0.0, 1.0):
            raise ValueError(f"noise_time must be 0.0 (SiT) or 1.0 (REPA), got {value!r}")
        if name == "method" and value not in METHODS:
            raise ValueError(f"the flow solver (method) must be one of {METHODS}, lower case, got {value!r}")
        super().__setattr__(name, value)

    def set_timesteps(self, num_steps: int) -> None:
        """Sets the grid of ``num_steps`` equal intervals from the noise end to the data end."""
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        self.grid = torch.linspace(self.noise_time, 1 - self.noise_time, num_steps + 1)

    @property
    def timesteps(self) -> torch.Tensor:
        """The times at which the model is evaluated, in sampling order."""
        if len(self.grid) == 0:
            raise ValueError("call set_timesteps(num_steps) before reading the timesteps")
        return self.grid if self.method == "heun" else self.grid[:-1]

    def integrate(self, velocity, x: torch.Tensor) -> torch.Tensor:
        """Integrates dx/dt = velocity(x, t) over the grid from noise x (B, C, H, W); returns the data end.

        Euler: x ← x + h·v(x, t). Heun: x' = x + h·v(x, t), then x ← x + h·(v(x, t) + v(x', t + h)) / 2.
        """
        for t, t_next in zip(self.grid[:-1], self.grid[1:]):
            step = t_next - t
            v = velocity(x, t)
            x_next = x + step * v
            if self.method == "heun":
                x_next = x + step * (v + velocity(x_next, t_next)) / 2
            x = x_next
        return x
