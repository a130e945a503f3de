"""Training recipe for learned in-context vectors (M²IV and the trained baselines).

Every unknown of the M²IV paper (m2iv-method.md §2) is a field here with a documented default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from m2iv.errors import M2IVError


@dataclass
class TeacherConfig:
    shots: int = 16  # N-shot ICL teacher (the paper's main protocol is 16-shot)
    selection: str = "random"  # how the teacher's demonstrations are drawn (random | fixed | rices)
    draws: int = 1  # demonstration sets per training query (shuffles / different draws)
    topk: int | None = 64  # teacher logits kept per answer token; None keeps the full distribution
    hidden_states: bool = False  # also cache per-layer hidden states (alignment losses, e.g. MimIC)
    hidden_site: str = "layer"  # whose states: "layer" (decoder-layer outputs) or "mlp" (MLP outputs, MimIC's original)
    # where: "answer" (the positions predicting the answer tokens) or "query" (every token of the query and answer,
    # MimIC's original; the student's sequence, right-aligned in both)
    hidden_span: str = "answer"
    context_window: int | None = None  # limit shots to what fits (None: the model's own window)
    ensemble: int = 1  # >1: this many disjoint contexts per query, combined by `ensemble_mode` (many-shot)
    # "product": the contexts' answer log-probabilities averaged (a product of experts, Parallel-ICL); "mixture":
    # their probabilities averaged, so a context that shows the query's class is not vetoed by those that do not
    ensemble_mode: str = "product"
    # Tasks whose demonstration pools each give the teacher one expert context per ensemble slot, combined like
    # the ensemble (a product of experts by default): one target distilled from several teachers at once (e.g. a
    # capitals teacher and a French teacher for French capitals). Empty: the task's own pool. The caller passes
    # the pools (train_vectors(experts=...)); the names are the record.
    experts: list[str] = field(default_factory=list)
    # "icl": every training query gets the N-shot teacher; "zero-shot": queries labelled meta["condition"] = False
    # (e.g. ordinary requests beside harmful ones) are read with no demonstrations and trained towards the plain
    # model's own answer, so the vectors learn to leave them as they were (contrastive training).
    negatives: str = "icl"

    def __post_init__(self) -> None:
        if self.ensemble_mode not in ("product", "mixture"):
            raise M2IVError(f"teacher ensemble_mode must be 'product' or 'mixture'; got {self.ensemble_mode!r}")
        if self.hidden_site not in ("layer", "mlp"):
            raise M2IVError(f"teacher hidden_site must be 'layer' or 'mlp'; got {self.hidden_site!r}")
        if self.hidden_span not in ("answer", "query"):
            raise M2IVError(f"teacher hidden_span must be 'answer' or 'query'; got {self.hidden_span!r}")
        if self.negatives not in ("icl", "zero-shot"):
            raise M2IVError(f"teacher negatives must be 'icl' or 'zero-shot'; got {self.negatives!r}")

    def to_json(self) -> dict:
        """The fields, with `experts` and `negatives` left out at their defaults: recipes, cache keys and vector
        folders of teachers that use neither stay what they were before the two existed."""
        d = asdict(self)
        for name in LATER_FIELDS:
            if d[name] == _TEACHER_DEFAULTS[name]:
                del d[name]
        return d


_TEACHER_DEFAULTS = {"experts": [], "negatives": "icl"}
LATER_FIELDS = tuple(_TEACHER_DEFAULTS)  # added after recipes were first stored


@dataclass
class TrainConfig:
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    lr_vectors: float = 1e-2  # vectors move far from zero; the paper's rates are unknown
    lr_scales: float = 1e-2  # weight factors (alpha / beta)
    weight_decay: float = 1e-3  # as I2CL / LIVE / MimIC
    no_decay: list[str] = field(default_factory=list)  # parameter names (after "site__") without weight decay
    warmup: float = 0.1  # fraction of steps with linear warmup, then cosine to 0
    clip: float = 1.0
    bf16: bool = False  # bf16 autocast (CPU and CUDA)
    seed: int = 0
    val_every: int = 50  # validate every K optimizer steps; the best checkpoint is kept
    val_size: int = 64  # training queries held out for validation
    checkpoint_every: int = 25
    # Losses (m2iv-method.md §2.4): L = w_mimicry * KL(teacher || student) + w_synergy * L_syn + w_ce * CE.
    w_mimicry: float = 1.0
    w_synergy: float = 0.1
    w_ce: float = 0.5  # the prior of the one third-party reimplementation ([R]: 1 / 1 / 0.5)
    # CE on the answer tokens, "first": the first answer token only (I2CL's original), or "sequence": every token of
    # the student's sequence (MimIC's original labels=input_ids)
    ce_span: str = "answer"
    w_align: float = 0.0  # layer-wise MSE to the teacher's hidden states (MimIC); needs teacher.hidden_states
    temperature: float = 1.0
    kl_eps: float = 0.0  # eps inside the KL's logs (LIVE's original: 1e-6); 0: the exact KL
    kl_skip_first: bool = False  # leave the first answer token's prediction out of the KL (LIVE's original masks)
    synergy: str = "decorrelation"  # decorrelation | barlow | none (see losses.py)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def __post_init__(self) -> None:
        if isinstance(self.teacher, dict):
            self.teacher = TeacherConfig(**self.teacher)
        if self.steps <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise M2IVError("steps, batch_size and grad_accum must be positive")
        if self.w_align and not self.teacher.hidden_states:
            raise M2IVError("w_align > 0 needs the teacher's hidden states (teacher.hidden_states=True)")
        if self.w_mimicry == self.w_ce == self.w_synergy == self.w_align == 0:
            raise M2IVError("every loss weight is 0: nothing to train")
        if self.ce_span not in ("answer", "first", "sequence"):
            raise M2IVError(f"ce_span must be 'answer', 'first' or 'sequence'; got {self.ce_span!r}")
        if not 0 <= self.kl_eps < 1:
            raise M2IVError(f"kl_eps must be in [0, 1); got {self.kl_eps}")
        if self.synergy not in ("decorrelation", "barlow", "none"):
            raise M2IVError(f"unknown synergistic loss {self.synergy!r}; use decorrelation, barlow or none")

    def to_json(self) -> dict:
        return {**asdict(self), "teacher": self.teacher.to_json()}
