"""Optimizer and learning-rate schedules of the original runs (original-spec §2.5, §3.3, §10).

Every run uses torch ``Adam(lr)`` = ``optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)``: no weight decay and no gradient
clipping anywhere in the original code. ``optim="adafactor"`` is the original's ``--optim adafactor``
(`adafactor`), and `head_only` trains the reward head alone (``--linear_probe`` / ``--freeze_lm``). A schedule is
evaluated at the update index k = 0, 1, … (optax passes the count of updates already applied), which is the lr torch
uses for its (k+1)-th ``optimizer.step()`` when the scheduler is stepped after each update.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

#: Accepted ``schedule_name`` values. "cosine_anneal" is the original ``--lr_schedule`` spelling of cosine_to_zero.
SCHEDULE_NAMES = ("cosine_to_zero", "cosine_anneal", "warmup_constant", "constant")


def _check(lr: float, nsteps: int | None = None) -> None:
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning rate must be a positive finite number, got {lr!r}")
    if nsteps is not None and (isinstance(nsteps, bool) or not isinstance(nsteps, numbers.Integral) or nsteps <= 0):
        raise ValueError(f"nsteps must be a positive integer (number of optimizer updates), got {nsteps!r}")


def cosine_to_zero(lr: float, nsteps: int) -> optax.Schedule:
    """Reward-model schedule: torch ``CosineAnnealingLR(T_max=nsteps)`` stepped after each update (§2.5):

    ``lr_k = lr · (1 + cos(π k / nsteps)) / 2`` for k = 0 … nsteps-1; no warmup, ends near 0 (and stays at 0 past
    nsteps, where torch would start a new cosine cycle — never reached by the original runs).
    """
    _check(lr, nsteps)
    return optax.cosine_decay_schedule(init_value=lr, decay_steps=nsteps, alpha=0.0)


def warmup_constant(lr: float, nsteps: int) -> optax.Schedule:
    """SFT/DPO/SimPO schedule (§3.3): ``lr_k = lr · min(1, (k + 1) / (w + 1))`` with ``w = int(0.1 · nsteps)``.

    The torch ``LambdaLR`` starts at lr/(w+1) rather than 0, reaches lr at k = w and never decays. ``w`` is computed
    with Python float arithmetic exactly as the original (e.g. nsteps=125 → w=12).
    """
    _check(lr, nsteps)
    warmup = int(0.1 * int(nsteps))

    def schedule(count: jnp.ndarray) -> jnp.ndarray:
        ramp = (jnp.asarray(count, jnp.float32) + 1.0) / (warmup + 1)
        return lr * jnp.minimum(1.0, ramp)

    return schedule


def constant(lr: float) -> optax.Schedule:
    """The same lr at every update (the RM's ``--lr_schedule constant``)."""
    _check(lr)
    return optax.constant_schedule(lr)


_SCHEDULES: dict[str, Callable[[float, int], optax.Schedule]] = {
    "cosine_to_zero": cosine_to_zero,
    "cosine_anneal": cosine_to_zero,
    "warmup_constant": warmup_constant,
    "constant": lambda lr, nsteps: constant(lr),
}


def make_schedule(lr: float, nsteps: int, schedule_name: str) -> optax.Schedule:
    """The schedule named ``schedule_name`` (one of ``SCHEDULE_NAMES``); useful on its own for logging the lr."""
    _check(lr, nsteps)
    try:
        factory = _SCHEDULES[schedule_name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown lr schedule {schedule_name!r}; expected one of {', '.join(SCHEDULE_NAMES)}"
        ) from None
    return factory(lr, nsteps)


OPTIMIZERS = ("adam", "adafactor")


def relative_step(count: jnp.ndarray) -> jnp.ndarray:
    """Adafactor's relative step size ``min(1e-2, 1/sqrt(t))`` at update t = count + 1 (no warmup_init)."""
    return jnp.minimum(1e-2, jax.lax.rsqrt(jnp.asarray(count, jnp.float32) + 1.0))


def adafactor() -> optax.GradientTransformation:
    """The original's ``toptim.Adafactor(model.parameters(), lr=lr)`` (torch_optimizer, openai's ``train.py``).

    torch_optimizer's defaults keep ``relative_step=True``, under which the ``lr`` it is given, and the scheduler
    that rescales that lr, are never read: the step is ``min(1e-2, 1/sqrt(t)) · max(1e-3, RMS(param))``
    (``scale_parameter``), the second moment is factored for every matrix (``eps = 1e-30``, ``decay_rate = -0.8``
    i.e. β2_t = 1 - t^-0.8), the update is clipped to RMS <= 1, no momentum, no weight decay. optax.adafactor
    does the same per parameter leaf. Where a leaf is not one torch matrix (a ``scan_layers`` stack [L, ...], a
    3-D attention kernel) the RMS statistics span the whole leaf and the factoring runs over its two largest
    axes, which is not torch's per-matrix split.
    """
    return optax.adafactor(learning_rate=relative_step, min_dim_size_to_factor=1, decay_rate=0.8,
                           multiply_by_parameter_scale=True, clipping_threshold=1.0, momentum=None, eps=1e-30)


def head_only(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optimizer`, then every update but the reward head's set to zero: the backbone never moves (torch's
    ``requires_grad = False`` on everything but ``score``). Its optimizer state is still kept (zero moments, since
    its gradients are zero) so the state has the params' structure and sharding like any other run's."""
    def zero_all_but_the_head(updates, params=None):
        del params
        return {k: v if k == "reward_head" else jax.tree.map(jnp.zeros_like, v) for k, v in updates.items()}

    return optax.chain(optimizer, optax.stateless(zero_all_but_the_head))


def make_optimizer(
    lr: float,
    nsteps: int,
    schedule_name: str,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    optim: str = "adam",
) -> optax.GradientTransformation:
    """``optax.adam`` driven by the named schedule: torch ``Adam(lr, betas=(b1, b2), eps)`` + its scheduler (§10);
    or with ``optim="adafactor"`` the original's Adafactor (`adafactor`: lr and schedule unread, as there).

    ``nsteps`` is the number of optimizer updates of the stage (``len(data) · epochs // batch_size``); each stage
    (SFT, then DPO/SimPO) gets its own optimizer and state, as in the original.
    """
    if optim not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optim!r}; expected one of {', '.join(OPTIMIZERS)}")
    if optim == "adafactor":
        _check(lr, nsteps)
        return adafactor()
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"Adam betas must lie in [0, 1), got b1={b1!r}, b2={b2!r}")
    if not eps > 0:
        raise ValueError(f"Adam eps must be positive, got {eps!r}")
    return optax.adam(learning_rate=make_schedule(lr, nsteps, schedule_name), b1=b1, b2=b2, eps=eps)
