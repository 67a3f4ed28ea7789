"""The one training loop: batches -> sharded step -> metrics log -> checkpoints, resumable and reusable.

Multi-process: every process runs this loop on the same host batches; the primary process's reading of the
checkpoint directory decides reuse/resume for all, and processes meet at the start and end of each stage."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from w2s_jax import distributed, faults
from w2s_jax.data.batches import PairDataset, SequenceDataset, num_train_steps, train_batches
from w2s_jax.train import step as step_lib
from w2s_jax.train.checkpoint import ModelStore, abstract_of
from w2s_jax.train.optim import make_optimizer

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass(frozen=True)
class TrainSpec:
    """Hyper-parameters of one training stage (all part of the model fingerprint)."""

    lr: float
    batch_size: int
    epochs: int
    schedule: str
    seed: int
    micro_batch_size: int | None = None  # None: the whole batch in one forward

    @property
    def n_micro(self) -> int:
        micro = self.micro_batch_size or self.batch_size
        if self.batch_size % micro:
            raise ValueError(f"train.batch_size={self.batch_size} is not a multiple of "
                             f"train.micro_batch_size={micro}")
        return self.batch_size // micro


@dataclass
class TrainResult:
    params: Any
    steps_run: int  # train steps executed in this call (0 when a finished checkpoint was reused)
    reused: bool
    history: list[dict]
    compiled_shapes: list[tuple] = field(default_factory=list)  # distinct input shapes = train-step compiles


def train(params, loss_fn: step_lib.LossFn, dataset: PairDataset | SequenceDataset, spec: TrainSpec, *,
          mesh, store: ModelStore, buckets: Sequence[int], prepare: Callable[[dict, int], dict],
          log_fn: Callable[[dict], None] | None = None, desc: str = "train") -> TrainResult:
    """Train `params` with `loss_fn` on `dataset`; reuse `store` if finished, resume it if partial.

    `prepare(batch, n_micro)` turns a host batch into the arrays `loss_fn` reads, with a leading microbatch axis
    (`step.to_microbatches`, or packed rows)."""
    nsteps = num_train_steps(len(dataset), spec.epochs, spec.batch_size)
    if nsteps < 1:
        raise ValueError(f"{desc}: {len(dataset)} examples x {spec.epochs} epochs give no full batch of "
                         f"{spec.batch_size}")
    with store.exclusive():
        return _train(params, loss_fn, dataset, spec, nsteps, mesh=mesh, store=store, buckets=buckets,
                      prepare=prepare, log_fn=log_fn, desc=desc)


def _train(params, loss_fn, dataset, spec: TrainSpec, nsteps: int, *, mesh, store: ModelStore, buckets, prepare,
           log_fn, desc: str) -> TrainResult:
    optimizer = make_optimizer(spec.lr, nsteps, spec.schedule)
    state = step_lib.init_state(params, optimizer)
    distributed.check_same(store.fingerprint, f"{desc}: the model fingerprint")
    complete = distributed.agree(store.complete)
    if complete and distributed.agree(store.final_kind == "params"):  # a finished model kept as parameters only
        found = store.restore_verified({"params": abstract_of(state.params)}, only_step=nsteps)
        if found is not None and found[0] == nsteps:
            log.info("%s: reusing finished checkpoint %s", desc, store.directory)
            return TrainResult(found[1]["params"], 0, True, [])
    found = store.restore_verified(abstract_of(state))  # None when there is no usable checkpoint
    if complete and found is not None and found[0] == nsteps:
        log.info("%s: reusing finished checkpoint %s", desc, store.directory)
        return TrainResult(found[1].params, 0, True, [])
    if complete:  # never trust a finished model whose final checkpoint does not restore
        log.warning("%s: %s is marked complete but its final checkpoint is unusable; %s", desc, store.directory,
                    f"resuming from step {found[0]}" if found else "training it again")
    start = 0
    if found is not None:
        start, state = found
        log.info("%s: resuming from step %d of %d (%s)", desc, start, nsteps, store.directory)
    if found is None or complete:
        store.mark("training", steps=nsteps)
    distributed.sync(f"train-start:{store.fingerprint}")
    step_fn = step_lib.make_train_step(loss_fn, optimizer, step_lib.state_shardings(state), nsteps)
    history: list[dict] = []
    shapes: dict[tuple, None] = {}
    batches = train_batches(dataset, spec.batch_size, epochs=spec.epochs, seed=spec.seed, buckets=buckets,
                            start_step=start)
    bar = tqdm(batches, total=nsteps - start, desc=desc, leave=False, disable=not distributed.is_primary())
    for k, batch in enumerate(bar, start=start):
        micro = step_lib.place_batch(prepare(batch, spec.n_micro), mesh)
        shapes[tuple(sorted((name, tuple(v.shape)) for name, v in micro.items()))] = None
        state, metrics = step_fn(state, micro)
        metrics = {name: float(v) for name, v in distributed.fetch_global_tree(metrics).items()}
        bad = next((name for name in ("loss", "grad_norm") if not math.isfinite(metrics.get(name, 0.0))), None)
        if bad is not None:  # checked before the save: the new state is never written
            last = store.latest_step()
            kept = f"the last good checkpoint (step {last}) in {store.directory} stays loadable" if last else \
                "no checkpoint was written before it"
            raise NonFiniteLossError(f"{desc}: {bad} is {metrics[bad]} at step {k + 1}; stopping ({kept}). "
                                     "Lower train.lr or check the data.")
        metrics.update(step=k + 1, lr=float(optimizer_lr(spec, nsteps, k)))
        history.append(metrics)
        if log_fn is not None:
            log_fn(metrics)
        faults.point("after_step", k + 1, f"{desc}:{k + 1}")
        last_as_params = k + 1 == nsteps and store.final == "params"  # `finish` writes that one
        if not last_as_params and store.save(k + 1, state):
            faults.point("during_save", k + 1, f"{desc}:{k + 1}")  # the write is in flight
    store.finish(nsteps, state)
    distributed.sync(f"train-end:{store.fingerprint}")
    return TrainResult(state.params, nsteps - start, False, history, list(shapes))


def optimizer_lr(spec: TrainSpec, nsteps: int, k: int) -> float:
    from w2s_jax.train.optim import make_schedule

    return float(make_schedule(spec.lr, nsteps, spec.schedule)(k))
