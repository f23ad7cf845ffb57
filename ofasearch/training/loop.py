"""The one training loop: ``ofasearch train``, teacher training, local trials and Ray Train workers.

DDP-aware without depending on Ray: when ``torch.distributed`` is initialised (Ray Train sets it
up), the distiller is wrapped in DistributedDataParallel, each rank trains on its shard and every
metric is summed across ranks before it is reported. Optimiser, learning-rate schedule, loss
scaling and seeding are timm's (``create_optimizer_v2``, ``CosineLRScheduler``, ``NativeScaler``,
``random_seed``), as in timm's own ``train.py``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad
from torch import nn
from torch.utils.data import DistributedSampler

from ofasearch.config import AugmentSpec, OptimSpec
from ofasearch.data import Pipeline, Splits
from ofasearch.distill import OFADistiller
from ofasearch.errors import SpecError
from ofasearch.training.evaluation import evaluate
from ofasearch.training.logit_cache import LogitCache
from ofasearch.training.ranks import all_sum, per_worker_batch, rank_and_size
from ofasearch.training.resident import ResidentTrainSet, resident_choice
from ofasearch.training.schedule import build_schedule
from ofasearch.training.speed import (
    PROBE_STEPS,
    amp_choice,
    compile_choice,
    compile_distiller,
    to_channels_last,
    uncompile_distiller,
)

__all__ = ["EpochReport", "FitResult", "LoopState", "fit"]


@dataclass
class EpochReport:
    """What every epoch reports (to Tune, TensorBoard, the progress bar)."""

    epoch: int  # 1-based: the number of epochs done, ASHA's time attribute
    train_loss: float
    val_acc: float
    lr: float
    seconds: float  # wall time of this epoch
    parts: dict[str, float] = field(default_factory=dict)
    diverged: bool = False

    def as_metrics(self) -> dict[str, float]:
        out = {k: v for k, v in asdict(self).items() if k != "parts"}
        out.update({f"loss_{k}": v for k, v in self.parts.items()})
        return out


@dataclass
class FitResult:
    """The outcome of :func:`fit`. ``distiller.student`` holds the trained weights: with
    ``keep_best`` those of the best validation epoch (``best_epoch``; ``test_acc`` is theirs) and
    ``last_state`` the last epoch's, as timm's train.py keeps ``model_best`` and ``last``."""

    distiller: OFADistiller
    history: list[EpochReport]
    best_val_acc: float
    test_acc: float | None
    train_seconds: float
    diverged: bool
    best_epoch: int = 0
    last_state: dict[str, torch.Tensor] | None = None
    test_acc_last: float | None = None
    resumed_from: int = 0  # epochs done before this call (0: not resumed)


ReportFn = Callable[[EpochReport, OFADistiller], None]

LoopState = dict[str, Any]
"""Everything :func:`fit` needs to continue after epoch ``state["epoch"]`` exactly as if it had
never stopped: student and branch weights, optimiser, schedule, loss scaler, RNG, history, the
best epoch so far (and its student weights). Plain tensors and containers: ``torch.load`` reads
it with ``weights_only=True``."""

STATE_FORMAT = 1
LOG_EVERY = 50  # steps between the loop's looks at the device (divergence check, progress bar)

log = logging.getLogger(__name__)


@dataclass
class _Training:
    """What one :func:`fit` carries from step to step."""

    distiller: OFADistiller
    model: nn.Module  # the distiller, wrapped in DistributedDataParallel when there are several ranks
    data: Splits
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    scaler: NativeScaler | None  # float16 autocast (CUDA only) needs loss scaling
    autocast: torch.dtype | None  # optim.amp on this device (None: float32)
    channels_last: bool  # a CNN student on CUDA: images go channels-last too
    compile_mode: str  # optim.compile; "auto" until the probe steps have decided, then on, graphs or off
    steps_left: int  # updates this fit() call still has to do (what compiling must repay)
    clip_grad: float | None
    sampler: DistributedSampler
    batch_size: int
    steps_per_epoch: int
    device: torch.device
    seed: int
    logit_cache: LogitCache | None
    pipeline: Pipeline
    resident: ResidentTrainSet | None  # the train set and logit cache on the device (optim.data_on_device)
    ema: ModelEmaV3 | None  # timm's EMA of the student's weights (optim.ema_decay > 0)
    updates: int = 0


def _start(
    distiller: OFADistiller,
    data: Splits,
    optim: OptimSpec,
    *,
    seed: int,
    device: torch.device,
    logit_cache: LogitCache | None,
    pipeline: Pipeline,
) -> _Training:
    """Move the distiller to ``device``, wrap it for DDP and build optimiser, schedule and scaler."""
    rank, world = rank_and_size()
    distiller.to(device)
    model: nn.Module = distiller
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            distiller, device_ids=[device.index] if device.type == "cuda" else None
        )
    # timm's parameter groups: no weight decay on norms, biases and tokens (1-d parameters);
    # "sgd" is timm's Nesterov SGD with the config's momentum.
    optimizer = create_optimizer_v2(
        distiller,
        opt=optim.name,
        lr=float(optim.lr),
        weight_decay=float(optim.weight_decay),
        momentum=float(optim.momentum),
    )
    batch_size = per_worker_batch(int(optim.batch_size), world)
    sampler = DistributedSampler(range(len(data.train)), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    steps_per_epoch = max(1, math.ceil(len(sampler) / batch_size))
    amp = amp_choice(str(optim.amp), device, data.image_size)
    autocast = amp.dtype
    channels_last = to_channels_last(distiller, device)
    clip = float(optim.clip_grad)
    placement = resident_choice(str(optim.data_on_device), pipeline, data.train, logit_cache, device)
    if rank == 0:
        if device.type == "cuda":
            log.info(amp.reason)
        log.info(pipeline.describe())
        log.info(placement.reason)
    return _Training(
        distiller=distiller,
        model=model,
        data=data,
        optimizer=optimizer,
        scheduler=build_schedule(optimizer, optim, steps_per_epoch),
        # bf16 keeps float32's exponent range: only fp16 needs its gradients scaled
        scaler=NativeScaler(device=device.type) if autocast == torch.float16 else None,
        autocast=autocast,
        channels_last=channels_last,
        compile_mode=str(optim.compile),
        steps_left=0,
        clip_grad=clip if clip > 0 else None,
        sampler=sampler,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        device=device,
        seed=seed,
        logit_cache=logit_cache,
        pipeline=pipeline,
        resident=ResidentTrainSet(data.train, pipeline, logit_cache, device) if placement.resident else None,
        ema=ModelEmaV3(distiller.student, decay=float(optim.ema_decay)) if float(optim.ema_decay) > 0 else None,
    )


def _batch(run: _Training, idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Images (this epoch's view, replayable: augmented and possibly mixed), targets (labels, or
    soft labels when mixed) and, with a logit cache, the teacher's cached logits of exactly
    those images."""
    cache = run.logit_cache
    view = epoch % cache.views if cache is not None else epoch
    if run.resident is not None:
        images, labels, cached = run.resident.batch(idx, seed=run.seed, view=view)
    else:
        images, labels = run.pipeline.train_batch(run.data.train, idx, seed=run.seed, view=view, device=run.device)
        cached = cache.lookup(idx, view).to(run.device) if cache is not None else None
    if run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels, cached


def _train_step(run: _Training, idx: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """One update on the samples ``idx``, without waiting for the device: the loss stays a
    device tensor (its finiteness is looked at by :func:`_train_epoch` at log points)."""
    images, labels, cached = _batch(run, idx, epoch)
    if run.compile_mode == "graphs":  # a new step: the CUDA graphs may reuse the last step's output memory
        torch.compiler.cudagraph_mark_step_begin()
    with torch.autocast(run.device.type, dtype=run.autocast, enabled=run.autocast is not None):
        loss, parts = run.model(images, labels, cached)
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler(loss, run.optimizer, clip_grad=run.clip_grad, parameters=run.distiller.parameters())
    else:
        loss.backward()
        if run.clip_grad is not None:
            dispatch_clip_grad(run.distiller.parameters(), run.clip_grad)
        run.optimizer.step()
    run.updates += 1
    run.scheduler.step_update(run.updates)
    if run.ema is not None:
        run.ema.update(run.distiller.student, step=run.updates)
    return loss.detach(), parts


def _diverged(bad: torch.Tensor, device: torch.device) -> bool:
    """Whether any rank has seen a non-finite loss (one host-device sync; every rank calls it
    at the same step, so all stop together)."""
    return all_sum([float(bad)], device)[0] > 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _decide_compile(run: _Training, step_seconds: float | None) -> None:
    """Apply ``optim.compile`` (``auto``: from the measured eager step, averaged over the ranks so
    every rank chooses alike) and say what was chosen."""
    if step_seconds is not None:
        step_seconds = all_sum([step_seconds], run.device)[0] / rank_and_size()[1]
    choice = compile_choice(run.compile_mode, run.steps_left, step_seconds, run.device)
    if rank_and_size()[0] == 0:
        log.info(choice.reason)
    if choice.compile:
        compile_distiller(run.distiller, graphs=choice.graphs)
    run.compile_mode = ("graphs" if choice.graphs else "on") if choice.compile else "off"


def _train_epoch(run: _Training, epoch: int, bar: Any) -> tuple[dict[str, torch.Tensor], int, bool]:
    """One pass over this rank's shard: per-sample sums of every loss part (``total`` is the
    loss, all kept on the device), the number of samples seen and whether training diverged.
    The host looks at the device only every :data:`LOG_EVERY` steps and at the end: a
    non-finite loss ends the epoch (and the run) at the next look."""
    run.sampler.set_epoch(epoch)
    run.distiller.set_epoch(epoch)  # schedules inside a loss (DKD's warm-up)
    order = torch.tensor(list(iter(run.sampler)), dtype=torch.long)
    run.distiller.train()
    sums: dict[str, torch.Tensor] = {}
    bad = torch.zeros((), dtype=torch.bool, device=run.device)
    seen = 0
    probe_start = 0.0
    for b in range(run.steps_per_epoch):
        idx = order[b * run.batch_size : (b + 1) * run.batch_size]
        if len(idx) < 2:  # BatchNorm cannot train on a single sample
            continue
        probing = run.compile_mode == "auto"
        if probing and b == 1:
            _sync(run.device)
            probe_start = time.perf_counter()
        loss, parts = _train_step(run, idx, epoch)
        run.steps_left -= 1
        if probing and b == PROBE_STEPS:  # steps 1..PROBE_STEPS timed, step 0 warmed up
            _sync(run.device)
            _decide_compile(run, (time.perf_counter() - probe_start) / PROBE_STEPS)
        seen += len(idx)
        n = float(len(idx))
        for key, value in parts.items():
            if key != "logits":
                sums[key] = sums.get(key, 0.0) + value.float() * n
        sums["total"] = sums.get("total", 0.0) + loss.float() * n
        bad |= ~torch.isfinite(loss)
        if bar is not None:
            bar.update(1)
        if (b + 1) % LOG_EVERY == 0:
            if _diverged(bad, run.device):
                return sums, seen, True
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss):.3f}")
    return sums, seen, _diverged(bad, run.device)


def _student_copy(distiller: OFADistiller, scored: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """A CPU copy of the student's weights (of ``scored``, the EMA model, when given)."""
    model = scored if scored is not None else distiller.student
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class _Progress:
    """What :func:`fit` has accumulated over the epochs done (saved in, and restored from, a
    :data:`LoopState`)."""

    epoch: int = 0
    history: list[EpochReport] = field(default_factory=list)
    best: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0


def _loop_state(run: _Training, done: _Progress) -> LoopState:
    """The state after ``done.epoch`` epochs (tensors on the CPU)."""
    # copies, not views of the live tensors: a caller may keep the state while training goes on
    branches = {k: v.detach().to("cpu", copy=True) for k, v in run.distiller.branches.state_dict().items()}
    return {
        "format": STATE_FORMAT,
        "epoch": done.epoch,
        "updates": run.updates,
        "student": _student_copy(run.distiller),
        "branches": branches,
        "optimizer": copy.deepcopy(run.optimizer.state_dict()),
        "scheduler": copy.deepcopy(run.scheduler.state_dict()),
        "scaler": copy.deepcopy(run.scaler.state_dict()) if run.scaler is not None else None,
        "ema": _student_copy(run.distiller, run.ema.module) if run.ema is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "history": [asdict(h) for h in done.history],
        "best_val_acc": done.best,
        "best_epoch": done.best_epoch,
        "best_student": done.best_state,
        "train_seconds": done.train_seconds,
    }


def _restore(run: _Training, state: LoopState) -> _Progress:
    """Put ``state`` back into the run (weights, optimiser, schedule, scaler, RNG)."""
    if state.get("format") != STATE_FORMAT:
        raise SpecError([f"--resume: checkpoint format {state.get('format')!r} is not {STATE_FORMAT}; train again"])
    run.distiller.student.load_state_dict(state["student"])
    run.distiller.branches.load_state_dict(state["branches"])
    # a copy: torch keeps CPU tensors of a loaded optimiser state as they are, and the steps
    # that follow would change the caller's state in place
    run.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler") is not None:
        run.scaler.load_state_dict(state["scaler"])
    run.updates = int(state["updates"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.module.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng_cpu"])
    if run.device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"], run.device)
    return _Progress(
        epoch=int(state["epoch"]),
        history=[EpochReport(**h) for h in state["history"]],
        best=float(state["best_val_acc"]),
        best_epoch=int(state["best_epoch"]),
        best_state=state.get("best_student"),
        train_seconds=float(state["train_seconds"]),
    )


def _mean_over_ranks(sums: dict[str, torch.Tensor], seen: int, device: torch.device) -> dict[str, float]:
    """Per-sample means of ``sums`` over every rank's samples (the epoch's one read of them)."""
    keys = sorted(sums)
    totals = all_sum([float(sums[k]) for k in keys] + [float(seen)], device)
    count = max(totals[-1], 1.0)
    return {k: v / count for k, v in zip(keys, totals[:-1], strict=True)}


def fit(
    distiller: OFADistiller,
    data: Splits,
    optim: OptimSpec,
    *,
    seed: int,
    device: torch.device,
    report: ReportFn | None = None,
    progress: bool = False,
    evaluate_test: bool = True,
    logit_cache: LogitCache | None = None,
    augment: AugmentSpec | None = None,
    keep_best: bool = False,
    resume: LoopState | None = None,
    save_state: Callable[[LoopState], None] | None = None,
) -> FitResult:
    """Train ``distiller``'s student (and exit branches) for ``optim.epochs`` epochs.

    Each epoch augments the training images with view ``epoch`` (replayable), reports an
    :class:`EpochReport` through ``report`` (on every rank: Ray's report is a barrier) and stops at
    the first non-finite loss, marking the run diverged. With ``logit_cache`` the teacher never
    runs: epoch e reads the cached logits of view ``e mod V`` and augments with that same view.
    ``augment`` (default: ofasearch's pad-crop + flip) builds the training views. With
    ``optim.ema_decay`` the EMA weights are scored every epoch and become the student at the end
    (as timm's train.py scores its EMA model).

    ``keep_best``: the student ends with the (scored) weights of its best validation epoch (what
    a run ships; the last epoch's are in ``FitResult.last_state``). ``save_state`` receives the
    :data:`LoopState` after every epoch, before ``report`` (a checkpoint never lags the reports);
    ``resume`` continues from one, bit for bit as the uninterrupted run on the same device and
    thread count.
    """
    pipeline = Pipeline(augment or AugmentSpec(), data)
    run = _start(distiller, data, optim, seed=seed, device=device, logit_cache=logit_cache, pipeline=pipeline)
    done = _restore(run, resume) if resume is not None else _Progress()
    epochs = int(optim.epochs)
    remaining = max(0, epochs - done.epoch) * run.steps_per_epoch
    run.steps_left = remaining
    if run.compile_mode != "auto" or run.steps_per_epoch <= PROBE_STEPS or remaining <= PROBE_STEPS + 1:
        _decide_compile(run, None)
    try:
        return _fit_epochs(run, done, optim, remaining, progress, report, keep_best, save_state, evaluate_test)
    finally:
        uncompile_distiller(distiller)


def _fit_epochs(
    run: _Training,
    done: _Progress,
    optim: OptimSpec,
    remaining: int,
    progress: bool,
    report: ReportFn | None,
    keep_best: bool,
    save_state: Callable[[LoopState], None] | None,
    evaluate_test: bool,
) -> FitResult:
    """The epochs of :func:`fit` (which compiles before and uncompiles after)."""
    distiller, data, device, pipeline = run.distiller, run.data, run.device, run.pipeline
    scored = run.ema.module if run.ema is not None else None
    resumed_from = done.epoch
    epochs = int(optim.epochs)
    bar = _progress(remaining) if progress and remaining and rank_and_size()[0] == 0 else None
    diverged = any(h.diverged for h in done.history)
    for epoch in range(done.epoch, epochs if not diverged else done.epoch):
        start = time.perf_counter()
        sums, seen, diverged = _train_epoch(run, epoch, bar)
        done.train_seconds += time.perf_counter() - start
        means = _mean_over_ranks(sums, seen, device)
        val_acc = 0.0 if diverged else evaluate(distiller, data.val, device, pipeline=pipeline, student=scored)
        if val_acc > done.best:
            done.best, done.best_epoch = val_acc, epoch + 1
            if keep_best:
                done.best_state = _student_copy(distiller, scored)
        entry = EpochReport(
            epoch=epoch + 1,
            train_loss=float("nan") if diverged else means.pop("total", float("nan")),
            val_acc=val_acc,
            lr=run.optimizer.param_groups[0]["lr"],
            seconds=time.perf_counter() - start,
            parts=means,
            diverged=diverged,
        )
        done.history.append(entry)
        done.epoch = epoch + 1
        run.scheduler.step(done.epoch)  # the next epoch's lr (a per-update schedule ignores it)
        if bar is not None:
            bar.write(f"epoch {entry.epoch}/{epochs}: loss {entry.train_loss:.4f} val_acc {val_acc:.4f}")
        if save_state is not None:
            save_state(_loop_state(run, done))
        if report is not None:
            report(entry, distiller)
        if diverged:
            break
    if bar is not None:
        bar.close()
    if run.ema is not None and not diverged:  # the EMA weights are what was scored: ship them
        distiller.student.load_state_dict(run.ema.module.state_dict())
    last_state, test_last = None, None
    if keep_best and done.best_state is not None:
        last_state = _student_copy(distiller)
        if evaluate_test and not diverged and done.best_epoch != done.epoch:
            test_last = evaluate(distiller, data.test, device, pipeline=pipeline)
        distiller.student.load_state_dict(done.best_state)
    usable = not diverged or (keep_best and done.best_state is not None)
    test_acc = evaluate(distiller, data.test, device, pipeline=pipeline) if evaluate_test and usable else None
    if keep_best and test_last is None and done.best_epoch == done.epoch:
        test_last = test_acc
    return FitResult(
        distiller,
        done.history,
        max(done.best, 0.0),
        test_acc,
        done.train_seconds,
        diverged,
        best_epoch=done.best_epoch,
        last_state=last_state,
        test_acc_last=test_last,
        resumed_from=resumed_from,
    )


def _progress(total: int) -> Any:
    """A tqdm bar over every update of the run (rank 0 only)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False)
