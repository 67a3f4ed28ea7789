"""The Trainer: one object owns jit, shardings, accumulation, checkpoints, metrics and the progress bar.

`step_fn` builds the one sharded train step of an objective (`train.step.make_train_step`); `lower` lowers it
ahead of time on abstract arrays (memory and FLOP figures without allocating); `fit` runs the loop over a
dataset, with a `ModelStore` (reuse a finished model, resume a partial one, save every `save_every` steps) or
without one. An objective (`w2s_jax.objectives`) brings its loss, batch keys and input preparation; the Trainer
brings the layout (padded or packed rows) and the mesh.

Multi-process: every process runs this loop on the same host batches; the primary process's reading of the
checkpoint directory decides reuse/resume for all, and processes meet at the start and end of each stage."""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax

from w2s_jax import distributed, faults
from w2s_jax.data.batches import PairDataset, SequenceDataset, num_train_steps, pack_row_len, train_batches
from w2s_jax.data.packing import Packing
from w2s_jax.models.lora import LoraModel, dropout_key, join_params, split_params
from w2s_jax.progress import progress
from w2s_jax.train import step as step_lib
from w2s_jax.train.checkpoint import ModelStore, abstract_of
from w2s_jax.train.optim import head_only as head_only_optimizer, make_optimizer, make_schedule

log = logging.getLogger(__name__)


_DROPOUT_SALT = 0xD0D0  # the dropout stream apart from the data-order one of the same seed


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
    optim: str = "adam"  # or "adafactor" (the original's --optim)
    head_only: bool = False  # train the reward head alone (--linear_probe / --freeze_lm)

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
    evals: list[dict] = field(default_factory=list)  # the `eval_every` points: step, eval_loss, eval_accuracy


class Trainer:
    """Trains any objective on one mesh. `layout` is "padded" or "packed" (`pack_len`: the least row length of a
    packed batch); `log_fn(desc, metrics)` receives every step's metrics."""

    def __init__(self, mesh, buckets: Sequence[int], *, layout: str = "padded", pack_len: int | None = None,
                 log_fn: Callable[[str, dict], None] | None = None):
        if layout not in ("padded", "packed") or (layout == "packed") != (pack_len is not None):
            raise ValueError(f"Trainer: layout {layout!r} with pack_len {pack_len!r}")
        self.mesh, self.buckets, self.layout, self.pack_len, self.log_fn = mesh, tuple(buckets), layout, pack_len, \
            log_fn

    def packing(self, dataset) -> Packing | None:
        if self.layout == "padded":
            return None
        rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        return Packing(pack_row_len(self.pack_len, dataset), self.buckets, rows)

    def prepare(self, objective, dataset) -> Callable[[dict, int], dict]:
        """Host batch -> the objective's microbatches in this trainer's layout."""
        packing = self.packing(dataset)
        return lambda batch, n_micro: objective.prepare(batch, n_micro, self.layout, packing)

    def place(self, host_microbatches: dict) -> dict:
        return step_lib.place_batch(host_microbatches, self.mesh)

    def init(self, params, spec: TrainSpec, nsteps: int):
        """(optimizer, TrainState) of a stage of `nsteps` steps; of params as ShapeDtypeStructs with their shardings,
        the state is ShapeDtypeStructs too (`step.abstract_state`: for `lower`, nothing allocated)."""
        optimizer = make_optimizer(spec.lr, nsteps, spec.schedule, optim=spec.optim)
        if spec.head_only:
            optimizer = head_only_optimizer(optimizer)
        abstract = all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params))
        return optimizer, (step_lib.abstract_state if abstract else step_lib.init_state)(params, optimizer)

    def step_fn(self, objective, model, optimizer, state_shardings, nsteps: int, frozen_shardings=None,
                head_only: bool = False, seed: int = 0):
        """The jitted `(state, microbatches[, frozen]) -> (state, metrics)` of `objective` on `model` (`frozen`:
        the base weights of a LoRA model, `models.lora`). `head_only`: the backbone is a constant of the loss (the
        original's detached features), so no gradient is computed for it. `seed`: the LoRA dropout stream's (only a
        LoRA model with `dropout` > 0 draws from it)."""
        loss_fn = objective.loss_fn(model, self.layout)
        if head_only:
            loss_fn = _detached_backbone(loss_fn)
        join = (lambda p, f: join_params(model, p, f)) if frozen_shardings is not None else None
        rng = (seed, dropout_key) if isinstance(model, LoraModel) and model.lora.dropout else None
        return step_lib.make_train_step(loss_fn, optimizer, state_shardings, nsteps, frozen_shardings, join, rng)

    def lower(self, objective, model, optimizer, abstract_state, abstract_batch: dict, nsteps: int = 1000,
              abstract_frozen=None):
        """The step lowered ahead of time on ShapeDtypeStructs (with their shardings): `.compile()` it for XLA's
        memory analysis and FLOP count; nothing is allocated."""
        shardings = step_lib.state_shardings(abstract_state)
        frozen_sh = None if abstract_frozen is None else jax.tree.map(lambda x: x.sharding, abstract_frozen)
        args = (abstract_state, abstract_batch) + (() if abstract_frozen is None else (abstract_frozen,))
        return self.step_fn(objective, model, optimizer, shardings, nsteps, frozen_sh).lower(*args)

    def stepper(self, objective, model, params, spec: TrainSpec, nsteps: int = 1000):
        """(step, compiled) for timing and profiling: `step(microbatches, run=True) -> metrics` is this trainer's
        step compiled ahead of time (`lower`) once per input shape into `compiled` (for XLA's figures); it carries
        the train state from call to call and waits for it (`run=False`: compile only)."""
        optimizer, state = self.init(params, spec, nsteps)
        holder, compiled = {"state": state}, {}

        def step(micro: dict, run: bool = True):
            key = tuple(sorted((k, v.shape) for k, v in micro.items()))
            if key not in compiled:
                compiled[key] = self.lower(objective, model, optimizer, holder["state"], micro, nsteps).compile()
            if run:
                holder["state"], metrics = compiled[key](holder["state"], micro)
                return jax.block_until_ready((holder["state"], metrics))[1]

        return step, compiled

    def fit(self, params, objective, model, dataset: PairDataset | SequenceDataset, spec: TrainSpec, *,
            store: ModelStore | None = None, desc: str = "train", evaluate: Callable[[Any], dict] | None = None,
            eval_every: int = 0) -> TrainResult:
        """Train `params` on `dataset`; with a `store`, reuse it if finished and resume it if partial.

        `evaluate(params) -> {"eval_loss", "eval_accuracy", ...}` runs after every `eval_every`-th step and after the
        last (the original's `eval_every`); its points go to `log_fn` and `TrainResult.evals`. It reads the
        parameters between two steps and touches nothing the step uses (no RNG, no data order, no buffers), so the
        trained parameters are bitwise those of a run without it."""
        nsteps = num_train_steps(len(dataset), spec.epochs, spec.batch_size)
        if nsteps < 1:
            raise ValueError(f"{desc}: {len(dataset)} examples x {spec.epochs} epochs give no full batch of "
                             f"{spec.batch_size}")
        with store.exclusive() if store is not None else contextlib.nullcontext():
            return self._fit(params, objective, model, dataset, spec, nsteps, store, desc,
                             evaluate if eval_every else None, eval_every)

    def _restore(self, store: ModelStore, state, nsteps: int, desc: str):
        """(finished params or None, (start step, state) to resume from or None, whether the store was complete)."""
        distributed.check_same(store.fingerprint, f"{desc}: the model fingerprint")
        complete = distributed.agree(store.complete)
        if complete and distributed.agree(store.final_kind == "params"):  # a finished model kept as parameters
            found = store.restore_verified({"params": abstract_of(state.params)}, only_step=nsteps)
            if found is not None and found[0] == nsteps:
                return found[1]["params"], None, True
        found = store.restore_verified(abstract_of(state))  # None when there is no usable checkpoint
        if complete and found is not None and found[0] == nsteps:
            return found[1].params, None, True
        if complete:  # never trust a finished model whose final checkpoint does not restore
            log.warning("%s: %s is marked complete but its final checkpoint is unusable; %s", desc, store.directory,
                        f"resuming from step {found[0]}" if found else "training it again")
        return None, found, complete

    def _fit(self, params, objective, model, dataset, spec: TrainSpec, nsteps: int, store, desc: str,
             evaluate=None, eval_every: int = 0):
        params, frozen = split_params(model, params)  # LoRA: only adapters + head train and are checkpointed
        optimizer, state = self.init(params, spec, nsteps)
        start = 0
        if store is not None:
            finished, found, complete = self._restore(store, state, nsteps, desc)
            if finished is not None:
                log.info("%s: reusing finished checkpoint %s", desc, store.directory)
                return TrainResult(join_params(model, finished, frozen), 0, True, [])
            if found is not None:
                start, state = found
                log.info("%s: resuming from step %d of %d (%s)", desc, start, nsteps, store.directory)
            if found is None or complete:
                store.mark("training", steps=nsteps)
            distributed.sync(f"train-start:{store.fingerprint}")
        frozen_sh = None if frozen is None else jax.tree.map(lambda x: x.sharding, frozen)
        step_fn = self.step_fn(objective, model, optimizer, step_lib.state_shardings(state), nsteps, frozen_sh,
                               spec.head_only, seed=_DROPOUT_SALT + spec.seed)
        extra = () if frozen is None else (frozen,)
        prepare, schedule = self.prepare(objective, dataset), make_schedule(spec.lr, nsteps, spec.schedule)
        history: list[dict] = []
        evals: list[dict] = []
        shapes: dict[tuple, None] = {}
        batches = train_batches(dataset, spec.batch_size, epochs=spec.epochs, seed=spec.seed, buckets=self.buckets,
                                start_step=start)
        bar = progress(batches, total=nsteps - start, desc=desc, unit="step", leave=False,
                       disable=not distributed.is_primary())  # a bar on a terminal, a line every few s in a log
        for k, batch in enumerate(bar, start=start):
            micro = self.place(prepare(batch, spec.n_micro))
            shapes[tuple(sorted((name, tuple(v.shape)) for name, v in micro.items()))] = None
            state, metrics = step_fn(state, micro, *extra)
            metrics = {name: float(v) for name, v in distributed.fetch_global_tree(metrics).items()}
            self._check_finite(metrics, k, store, desc)
            metrics.update(step=k + 1, lr=float(schedule(k)))
            history.append(metrics)
            bar.set_postfix(loss=metrics["loss"], refresh=False)
            if self.log_fn is not None:
                self.log_fn(desc, metrics)
            if evaluate is not None and ((k + 1) % eval_every == 0 or k + 1 == nsteps):
                point = {**evaluate(join_params(model, state.params, frozen)), "step": k + 1}
                evals.append(point)
                if self.log_fn is not None:
                    self.log_fn(desc, point)
            faults.point("after_step", k + 1, f"{desc}:{k + 1}")
            last_as_params = store is not None and k + 1 == nsteps and store.final == "params"  # `finish` writes it
            if store is not None and not last_as_params and store.save(k + 1, state):
                faults.point("during_save", k + 1, f"{desc}:{k + 1}")  # the write is in flight
        if store is not None:
            store.finish(nsteps, state)
            distributed.sync(f"train-end:{store.fingerprint}")
        return TrainResult(join_params(model, state.params, frozen), nsteps - start, False, history, list(shapes),
                           evals)

    @staticmethod
    def _check_finite(metrics: dict, k: int, store, desc: str) -> None:
        """Checked before the save: a non-finite state is never written."""
        bad = next((name for name in ("loss", "grad_norm") if not math.isfinite(metrics.get(name, 0.0))), None)
        if bad is None:
            return
        last = store.latest_step() if store is not None else None
        kept = f"the last good checkpoint (step {last}) in {store.directory} stays loadable" if last else \
            "no checkpoint was written before it"
        raise NonFiniteLossError(f"{desc}: {bad} is {metrics[bad]} at step {k + 1}; stopping ({kept}). "
                                 "Lower train.lr or check the data.")


def _detached_backbone(loss_fn):
    def loss(params, mb, progress):
        return loss_fn({k: v if k == "reward_head" else jax.lax.stop_gradient(v) for k, v in params.items()}, mb,
                       progress)

    return loss
