"""The sections of a config that say how a student trains: data, models and pairs, distillation,
optimiser and augmentation (each a pydantic model that refuses unknown keys), and the search-spec
forms of the tunable ones. How a search runs is :mod:`ofasearch.config.search_settings`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ofasearch.config.registry import DATASETS as DATASET_REGISTRY
from ofasearch.config.registry import (
    LOSSES,
    METHODS,
    OPTIMIZERS,
)
from ofasearch.config.tunable import (
    AutoAugment,
    BranchLossName,
    Budget,
    Choices,
    CropName,
    CropShare,
    EpsValue,
    Interpolation,
    LossName,
    MethodName,
    NonNegativeFloat,
    NonNegativeInt,
    NormalizeName,
    OptimizerName,
    PositiveFloat,
    PositiveInt,
    Range,
    RecipeName,
    ScheduleName,
    StageList,
    StepOn,
    Strict,
    Switch,
    UnitFloat,
    searchable,
)

__all__ = [
    "AugmentSearchSpec",
    "AugmentSpec",
    "DataSpec",
    "DistillSearchSpec",
    "DistillSpec",
    "ModelSpec",
    "OptimSearchSpec",
    "OptimSpec",
    "PairSpec",
    "TeacherRecipe",
    "batch_split_problem",
]

DATASETS: tuple[str, ...] = tuple(DATASET_REGISTRY)
# section -> its field names, for PairSpec.settings (filled once the sections are defined below)
SECTION_FIELDS: dict[str, tuple[str, ...]] = {}
PAPER_PROTOCOL = "paper: val_acc is the TEST accuracy (best over epochs), trained on all of train"
HELD_OUT_PROTOCOL = "held-out validation split of train (test never scored during training)"
# Validation-context key of the function that checks a model name against the installed timm
# (``loading`` passes the installed check; results folders are read without it, see ``check_models``).
MODEL_CHECK = "model_check"
RESIZE_POLICIES = ("squash", "center-crop", "pad")  # data.resize (ofasearch.data.imagefolder.decode)
LATER_DATA_KEYS = ("resize",)  # data keys dumped only when set (see DataSpec)


class DataSpec(Strict):
    """Where the images come from and how they are split."""

    dataset: Literal[DATASETS]
    """the registry's names"""
    root: str = "auto"
    image_size: int | None = Field(default=None, ge=4, le=1024)
    train_subset: int | None = Field(default=None, ge=10)
    val_fraction: float | None = Field(default=None, ge=0, lt=1)
    """None: 0.1, unless val_size is given. 0: the paper's protocol (train on all of train, score every epoch on the
    test split and report the best): comparable with the paper's tables, but not a held-out estimate, and labelled
    as such in every output
    """
    val_size: int | None = Field(default=None, ge=10)
    """a fixed number of validation images, held out before train_subset applies: how finely the search's accuracies
    resolve does not then depend on how much it trains on
    """
    augment: bool = True
    resize: Literal[RESIZE_POLICIES] | None = None
    """how images that are not square reach image_size x image_size (imagefolder; the built-in datasets are square):
    squash (stretch, the default), center-crop (shorter side to size, cut the middle) or pad (longer side to size,
    black borders). None: squash.
    """

    @model_serializer(mode="wrap")
    def _later_keys_only_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Keys added after content hashes of data specs were first kept (teacher store, logit
        cache) are dumped only when set: an older spec keeps its hash, its teacher and cache."""
        data = handler(self)
        for key in LATER_DATA_KEYS:
            if isinstance(data, dict) and data.get(key) is None:
                data.pop(key, None)
        return data

    @property
    def paper_protocol(self) -> bool:
        """Whether scores are taken on the test split (``val_fraction: 0``, as the paper reports)."""
        return self.val_fraction == 0

    @property
    def protocol(self) -> str:
        """How outputs label the scores."""
        return PAPER_PROTOCOL if self.paper_protocol else HELD_OUT_PROTOCOL

    @model_validator(mode="after")
    def _one_val_rule(self) -> Self:
        if self.val_size is not None and self.val_fraction is not None:
            raise ValueError(f"give val_size ({self.val_size}) or val_fraction ({self.val_fraction}), not both")
        return self


class TeacherRecipe(Strict):
    """How ``checkpoint: auto`` trains a teacher once (the result is cached by content hash)."""

    epochs: int = Field(default=4, ge=1)
    optimizer: Literal[OPTIMIZERS] = "adamw"
    """the registry's names"""
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    batch_size: int = Field(default=128, ge=1)


class ModelSpec(Strict):
    """A timm model: a registered name (``resnet18``) or a timm model class (``MlpMixer``)."""

    model: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """the checkpoint file's SHA-256 (`ofasearch export` pins the teacher a search used by content)"""
    pretrained: bool = False
    recipe: TeacherRecipe | None = None
    """how a teacher is trained once (``checkpoint: auto``) or fine-tuned from ``pretrained: true`` (given: the
    pretrained weights are fine-tuned on the data); None: the defaults, or as it is
    """

    @model_validator(mode="after")
    def _known_model(self, info: ValidationInfo) -> ModelSpec:
        check = (info.context or {}).get(MODEL_CHECK)
        message = check(self.model) if check is not None else None
        if message:
            raise ValueError(message)
        if self.pretrained and self.checkpoint not in (None, "auto"):
            raise ValueError("give either pretrained: true or checkpoint: PATH, not both")
        if self.sha256 is not None and self.checkpoint in (None, "auto"):
            raise ValueError("sha256 pins a checkpoint file: give checkpoint: PATH with it")
        if self.recipe is not None and self.checkpoint not in (None, "auto"):
            raise ValueError(
                f"recipe trains a teacher (checkpoint: auto) or fine-tunes a pretrained one; the file "
                f"{self.checkpoint!r} is used as it is: remove recipe or checkpoint"
            )
        if self.pretrained and self.recipe is not None:
            self.checkpoint = "auto"  # fine-tuned once on the data and kept like a trained teacher
        return self

    @property
    def training_recipe(self) -> TeacherRecipe:
        """The recipe ``checkpoint: auto`` trains (or fine-tunes) with: the given one or the defaults."""
        return self.recipe or TeacherRecipe()

    @property
    def fine_tunes(self) -> bool:
        """ImageNet (hub) weights fine-tuned on the data before they teach, as the paper's teachers."""
        return self.pretrained and self.checkpoint == "auto"

    @property
    def label(self) -> str:
        """A short name for tables: the model name plus its kwargs."""
        if not self.kwargs:
            return self.model
        args = ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()))
        return f"{self.model}({args})"


class PairSpec(Strict):
    """A teacher and the student it distills into.

    ``recipe`` (a name in ``RECIPES``) overrides the document's for this pair; ``settings`` are
    this pair's own values (dotted paths, e.g. ``distill.ofa_weight: 0.1``): over the spec's
    constants, and for a value the spec searches, where this pair's first (enqueued) trial and
    its baselines start. Values common to every pair are moved to the spec's sections when it
    is read; what differs stays here."""

    teacher: ModelSpec
    student: ModelSpec
    recipe: RecipeName | None = None
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("settings")
    @classmethod
    def _known_paths(cls, settings: dict[str, Any]) -> dict[str, Any]:
        for path in settings:
            section, _, key = path.partition(".")
            fields = SECTION_FIELDS.get(section)
            if fields is None or key not in fields:
                raise ValueError(
                    f"{path!r} is not a setting; give section.key with section one of {', '.join(SECTION_FIELDS)}"
                )
        return settings

    @model_validator(mode="before")
    @classmethod
    def _teacher_defaults_to_auto(cls, data: Any) -> Any:
        """A teacher without weights would teach noise: unless pretrained, train one (``auto``)."""
        if isinstance(data, dict) and isinstance(data.get("teacher"), dict):
            teacher = dict(data["teacher"])
            if not teacher.get("pretrained"):
                teacher.setdefault("checkpoint", "auto")
            data = {**data, "teacher": teacher}
        return data

    @property
    def label(self) -> str:
        return f"{self.teacher.label} -> {self.student.label}"


class DistillSpec(Strict):
    """How the student learns from the teacher: a composition of loss terms (``method: ofa``), or
    one of the baselines (``method: kd | dkd | dist | none``).

    ``method: ofa`` is the OFA-KD frame: ``gt_weight * CE + kd_weight * logit_loss(final logits) +
    ofa_weight * sum over stages of branch_loss(exit branch logits)``. The paper's OFA-KD is
    ``logit_loss: ofa``, ``branch_loss: ofa``; ``stages: []`` has no branches, so every baseline is
    a point of this space too. Each loss reads its own settings (``config.registry.LOSSES``).
    """

    method: MethodName = "ofa"
    logit_loss: LossName | None = None
    """the loss on the final logits: ofa | kd | dkd | dist; None: the method's own (ofa for ofa)"""
    branch_loss: BranchLossName = "ofa"
    """the loss of each exit branch (method ofa, stages not []): ofa | kd | dist"""
    logit_standardize: Switch = False
    """logit standardization (Sun et al., CVPR 2024) in front of each term's loss: z-scored logits"""
    branch_standardize: Switch = False
    stages: StageList | None = None
    """None: every stage the student has (1-4 for most models); []: none"""
    temperature: PositiveFloat = 1.0
    """of the ofa and kd losses"""
    eps: EpsValue = 1.0
    gt_weight: NonNegativeFloat = 1.0
    kd_weight: NonNegativeFloat = 1.0
    """the final-logit term's weight"""
    ofa_weight: NonNegativeFloat = 1.0
    """the exit-branch terms' weight"""
    dkd_alpha: NonNegativeFloat = 1.0
    """the dkd loss (Zhao et al., CVPR 2022; its CIFAR-100 setting): alpha * TCKD + beta * NCKD at its own temperature,
    its weight ramped up linearly over dkd_warmup_epochs (None: the paper's share of the budget, 20 of 240 epochs,
    at least 1)
    """
    dkd_beta: NonNegativeFloat = 8.0
    dkd_temperature: PositiveFloat = 4.0
    dkd_warmup_epochs: NonNegativeInt | None = None
    dist_beta: NonNegativeFloat = 1.0
    """the dist loss (Huang et al., NeurIPS 2022; the paper's and its code's defaults): T^2 * (beta * inter-class +
    gamma * intra-class relation loss)
    """
    dist_gamma: NonNegativeFloat = 1.0
    dist_temperature: PositiveFloat = 1.0
    teacher_cache: Annotated[
        Literal["auto", "on", "off"], BeforeValidator(lambda v: {True: "on", False: "off"}.get(v, v))
    ] = "auto"
    """YAML reads a bare on/off as true/false: accept both spellings"""
    cache_views: int | None = Field(default=None, ge=1)
    """None: one view per epoch (at most 32)"""

    @model_validator(mode="after")
    def _logit_loss_fits_method(self) -> Self:
        if self.logit_loss is not None and self.method not in ("ofa", self.logit_loss):
            raise ValueError(
                f"logit_loss: {self.logit_loss!r} with method {self.method!r}: a baseline's loss is its method; "
                "compose losses with method: ofa"
            )
        return self

    @property
    def logit_loss_name(self) -> str | None:
        """The loss on the final logits (None: the student alone)."""
        if self.method == "none":
            return None
        return self.logit_loss or self.method

    @property
    def has_branches(self) -> bool:
        """Whether exit branches are trained (``stages`` None means every stage)."""
        return METHODS[self.method].branches and self.stages != []

    def active_settings(self) -> set[str]:
        """The distill settings this config's terms read: what a search suggests for it and what
        its table row shows (the others are left at their defaults and mean nothing here)."""
        active = {"method", "gt_weight"}
        logit = self.logit_loss_name
        if logit is not None:
            active |= {"logit_standardize", "kd_weight", *LOSSES[logit].params.values()}
            if self.method == "ofa":
                active.add("logit_loss")
        if METHODS[self.method].branches:
            active.add("stages")
        if self.has_branches:
            active |= {"branch_loss", "branch_standardize", "ofa_weight", *LOSSES[self.branch_loss].params.values()}
        if "dkd_temperature" in active:
            active.add("dkd_warmup_epochs")
        return active

    @property
    def composition(self) -> str:
        """A short name of what trains the student: ``dist``, ``ofa + ofa@1,2,3,4``, ``dist~ + kd@3,4``
        (``~``: logit standardization), ``none`` for the student alone."""
        logit = self.logit_loss_name
        if logit is None:
            return "none"
        text = logit + ("~" if self.logit_standardize else "")
        if self.has_branches:
            where = "all" if self.stages is None else ",".join(str(s) for s in self.stages)
            text += f" + {self.branch_loss}{'~' if self.branch_standardize else ''}@{where}"
        return text


class OptimSpec(Strict):
    """Optimiser and schedule of one training; ``epochs`` is the full budget (ASHA's ``max_t``)."""

    name: OptimizerName = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.05
    momentum: NonNegativeFloat = 0.9
    batch_size: PositiveInt = 128
    """the GLOBAL batch: split evenly across DDP workers"""
    epochs: Budget = 5
    warmup_epochs: NonNegativeInt = 1
    clip_grad: NonNegativeFloat = 5.0
    schedule: ScheduleName = "cosine"
    """the lr schedule after the warm-up, built by timm's create_scheduler_v2: cosine to min_lr, or step (the lr times
    decay_rate every decay_epochs, as the paper's ImageNet CNN runs)
    """
    min_lr: NonNegativeFloat = 0.0
    """where the cosine schedule ends"""
    decay_epochs: PositiveFloat = 30.0
    """step: epochs between decays"""
    decay_rate: UnitFloat = 0.1
    """step: the lr's factor at each decay"""
    warmup_lr: NonNegativeFloat | None = None
    """where the linear warm-up starts; None: lr / (warm-up steps + 1), so the first step learns"""
    warmup_prefix: Switch = True
    """true: the warm-up comes before the schedule (whose length is epochs - warmup_epochs); false (timm train.py's
    default): the schedule starts at epoch 0 and the warm-up overrides it
    """
    step_on: StepOn = "update"
    """when the lr changes: after every update (smooth) or at each epoch's start (timm train.py)"""
    ema_decay: UnitFloat = 0.0
    """> 0: timm's ModelEmaV3 of the student, which is then scored and shipped"""
    amp: Annotated[
        Literal["auto", "bf16", "fp16", "off"], BeforeValidator(lambda v: {True: "auto", False: "off"}.get(v, v))
    ] = "auto"
    """mixed precision, CUDA only (a CPU trains in float32 whatever this says): auto is float32 up to 64 px (bf16
    measured slower there) and above it bf16 where the GPU supports it, else fp16 with loss scaling
    (ofasearch.training.speed); true/false from older specs mean auto/off
    """
    compile: Literal["auto", "on", "graphs", "off"] = "auto"
    """torch.compile of the student and exit branches (and a live teacher): auto compiles when the run's remaining
    steps repay the compile time (ofasearch.training.speed); graphs compiles with CUDA graphs on a CUDA device
    (torch.compile's reduce-overhead mode: a small step stops paying Python and a launch per kernel), which auto
    does not choose until it is measured on a GPU; on a CPU graphs is on
    """
    data_on_device: Literal["auto", "on", "off"] = "auto"
    """the train set and its teacher-logit cache on the training device, augmented there in batch: auto on CUDA when
    they take at most a quarter of its free memory (ofasearch.training.resident)
    """


class AugmentSpec(Strict):
    """Training augmentation and label regularisation (timm's parts), replayable per (sample,
    view) so the teacher-logit cache stays exact. The defaults are ofasearch's own pipeline:
    a random crop of the stored images with zero padding + flip, no mixing, plain labels."""

    crop: CropName = "pad"
    """pad: crop of the image padded by 1/8 (+ flip); rrc: timm's RandomResizedCrop (+ flip) from the stored images
    (an image folder's original files) to data.image_size, then the other timm transforms (create_transform); crop and
    flip alone run as tensor ops, on the device with data_on_device
    """
    auto_augment: AutoAugment | None = None
    """a timm policy string, e.g. rand-m9-mstd0.5-inc1"""
    color_jitter: NonNegativeFloat = 0.0
    re_prob: UnitFloat = 0.0
    """timm RandomErasing (pixel mode), after normalisation"""
    mixup: NonNegativeFloat = 0.0
    """Beta(alpha, alpha) of timm's Mixup; 0: off"""
    cutmix: NonNegativeFloat = 0.0
    """Beta(alpha, alpha) of timm's CutMix; 0: off"""
    label_smoothing: UnitFloat = 0.0
    normalize: NormalizeName = "model"
    """model: each model's own timm mean/std; dataset: the dataset's (data registry), for both models"""
    eval_crop_pct: CropShare = 0.875
    """how crop: rrc runs are scored (timm's eval transform): the shorter side to image_size / eval_crop_pct (256 for
    224 at 0.875), resized with eval_interpolation, the centre kept; the paper's code takes both from the student's
    timm config (resnet18 0.875 bilinear, DeiT and Swin 0.9 bicubic)
    """
    eval_interpolation: Interpolation = "bilinear"

    @model_validator(mode="after")
    def _timm_transforms_need_rrc(self) -> Self:
        uses = [k for k in ("auto_augment", "color_jitter", "re_prob") if getattr(self, k) not in (None, 0.0)]
        if uses and self.crop == "pad":
            raise ValueError(f"{', '.join(uses)} need crop: rrc (timm's create_transform pipeline)")
        return self

    @property
    def eval_cut(self) -> tuple[float, str] | None:
        """(crop_pct, interpolation) of the timm eval cut that crop: rrc runs are scored on; None
        for the pad crop, scored on a square resize."""
        return None if self.crop == "pad" else (float(self.eval_crop_pct), str(self.eval_interpolation))

    @property
    def mixes(self) -> bool:
        """Whether images and labels are mixed (mixup or cutmix): labels become soft."""
        return float(self.mixup) > 0 or float(self.cutmix) > 0


def batch_split_problem(batch_size: Any, workers: int, where: str = "optim.batch_size") -> str | None:
    """Why ``batch_size`` (a constant, or every choice / range end of a search) cannot be split
    evenly over ``workers`` DDP workers; None when it can. The batch is global, so a config
    searched on one worker trains the same on several."""
    if workers <= 1:
        return None
    if isinstance(batch_size, Range):
        return (
            f"{where}: a range cannot be split over {workers} workers; give {{choices: [...]}} of "
            f"multiples of {workers}"
        )
    values = batch_size.choices if isinstance(batch_size, Choices) else [batch_size]
    bad = [v for v in values if int(v) % workers]
    if bad:
        return (
            f"{where}: {bad[0]} is not divisible by the {workers} workers (the batch is global: each "
            f"worker takes batch_size / workers); use a multiple of {workers}"
        )
    return None


DistillSearchSpec = searchable(DistillSpec, "DistillSearchSpec")
OptimSearchSpec = searchable(OptimSpec, "OptimSearchSpec")
AugmentSearchSpec = searchable(AugmentSpec, "AugmentSearchSpec")
SEARCHABLE_SECTIONS = ("distill", "optim", "augment")
SECTION_FIELDS.update(
    {
        "distill": tuple(DistillSpec.model_fields),
        "optim": tuple(OptimSpec.model_fields),
        "augment": tuple(AugmentSpec.model_fields),
    }
)
