"""Training loop for in-context vectors: a readable nanoGPT-style loop over a frozen model.

    trainer = VectorTrainer(lm, vectors, TrainConfig(steps=200), workdir="out/task.train")
    best = trainer.fit(builder, train_queries, teacher, val_queries)

Per optimizer step: `grad_accum` micro-batches of (zero-shot prompt + answer) pass through the model
with the vectors injected; loss = w_mimicry * KL(teacher || student) + w_synergy * L_syn + w_ce * CE on
the answer tokens. Data order is a pure function of (seed, step) and the checkpoint holds vectors,
AdamW moments, step and best-so-far, so a killed run resumes to the same vectors as an uninterrupted
one. Under `accelerate launch`/torchrun every process takes a slice of each batch and gradients are
averaged across processes, so all ranks hold identical vectors.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from m2iv.constants import TRAIN_LOG_NAME
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError
from m2iv.files import write_dir_atomic, writing
from m2iv.identity import identity_diff, jsonable
from m2iv.progress import Progress
from m2iv.train import losses
from m2iv.train.config import TrainConfig
from m2iv.train.schedule import warmup_cosine
from m2iv.train.teacher import TeacherTargets, _answer_logits, _pad_left, query_span, student_batch
from m2iv.vectors.inject import inject


class Trainable(Protocol):
    """What the trainer trains: InContextVectors, or an adapter of m2iv.adapters (LoRA, a KV prefix), which brings
    its own `attach(lm)`. Parameters live in `params` (name `site__part`); `spec()` names the layout."""

    params: torch.nn.ParameterDict
    sites: dict

    def spec(self) -> dict: ...

    def parameters(self, recurse: bool = True) -> Any: ...


def attach(lm, params: Trainable):
    """Hook `params` onto the model for training (base weights frozen): vectors through the injection engine, an
    adapter through its own `attach`."""
    own = getattr(params, "attach", None)
    return own(lm) if callable(own) else inject(lm.model, params, lm.adapter)  # type: ignore[arg-type]


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base rates: cfg's warm-up + cosine cycles (train/schedule.py; the whole run, or the cycles
    that `cfg.restarts` start when a finished run is continued)."""
    return warmup_cosine(step, cfg.steps, cfg.warmup, cfg.restarts)


CHECKPOINT = "checkpoint"
# Recipe fields that do not change the trained vectors (how often to save, progress display).
NOT_IDENTITY = ("checkpoint_every", "checkpoint_minutes")
# What a continuation of a finished run changes in its recipe (`extends`).
CONTINUED = ("recipe.restarts", "recipe.steps")


def extends(stored: dict, current: dict, step: int) -> bool:
    """Whether `current` continues the finished run `stored` (at `step`): the same run but for more steps, with a
    new learning-rate cycle starting where the stored one ended."""
    old, new = stored.get("recipe", {}), current.get("recipe", {})
    return (step == old.get("steps") and new.get("restarts", []) == [*old.get("restarts", []), old.get("steps")]
            and set(identity_diff(stored, current)) <= set(CONTINUED))


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_world_size(), dist.get_rank()
    return None, 1, 0


def _stale(teacher: TeacherTargets, what: str) -> M2IVError:
    return M2IVError(f"teacher and student {what} differ; the teacher cache is stale — delete {teacher.key} under "
                     "the teacher cache and rerun")


class VectorTrainer:
    def __init__(self, lm, vectors: Trainable, cfg: TrainConfig, workdir: str | Path,
                 show_progress: bool = True, identity: dict | None = None) -> None:
        """`identity` names what the vectors are trained for (model, task, data; see `train.run`); with the
        recipe and the vector layout it is stored in the checkpoint, and a checkpoint of another is never resumed."""
        self.lm, self.vectors, self.cfg = lm, vectors, cfg
        recipe = {k: v for k, v in cfg.to_json().items() if k not in NOT_IDENTITY}
        self.identity = jsonable({"recipe": recipe, "layout": vectors.spec(), **(identity or {})})
        self.workdir = Path(workdir)
        self.show_progress = show_progress
        self.dist, self.world, self.rank = _dist()
        # Parameters with requires_grad=False stay fixed (e.g. I2CL trains only the scales of extracted vectors);
        # those named in `no_decay` (MimIC's original exempts its gate bias) get no weight decay.
        def group(vector: bool, decay: bool) -> dict[str, Any]:
            ps = [p for n, p in vectors.params.items() if n.endswith("__vector") == vector and p.requires_grad
                  and (n.split("__", 1)[1] not in cfg.no_decay) == decay]
            return {"params": ps, "lr": cfg.lr_vectors if vector else cfg.lr_scales,
                    **({} if decay else {"weight_decay": 0.0})}

        groups = [group(True, True), group(False, True), group(True, False), group(False, False)]
        self.trainable = [p for g in groups for p in g["params"]]
        if not self.trainable:
            raise M2IVError("no vector parameter requires a gradient: nothing to train")
        groups = [g for g in groups if g["params"]]  # base rates stay paired with their own group
        self.base_lrs: list[float] = [g["lr"] for g in groups]
        self.opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        self.step = 0
        self.best = {"metric": -1.0, "step": -1}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict] = []
        self.saved_at = time.monotonic()

    # -- data -------------------------------------------------------------------------------------
    def _order(self, n: int, step: int) -> list[int]:
        """Item indices of optimizer step `step`: consecutive slices of seeded per-epoch permutations."""
        per = self.cfg.batch_size * self.cfg.grad_accum
        out: list[int] = []
        pos = step * per
        while len(out) < per:
            epoch, off = divmod(pos, n)
            perm = list(range(n))
            random.Random(self.cfg.seed * 100_003 + epoch).shuffle(perm)
            take = perm[off: off + per - len(out)]
            out += take
            pos += len(take)
        return out

    # -- one loss evaluation --------------------------------------------------------------------------
    def _loss(self, builder, queries: list[Sample], teacher: TeacherTargets | None, rows: list[int], handle):
        """One forward pass with the vectors injected, then each weighted loss the recipe turns on."""
        cfg = self.cfg
        batch, labels, query_start = student_batch(builder, queries)
        handle.set_query_start(query_start)
        batch = {k: v.to(self.lm.device) for k, v in batch.items()}
        amp = torch.autocast(self.lm.device.type, dtype=torch.bfloat16) if cfg.bf16 else nullcontext()
        align = bool(cfg.w_align and teacher is not None and teacher.hidden is not None)
        span, lengths = query_span(batch, query_start) if align and cfg.teacher.hidden_span == "query" else (None, None)
        n_ans = labels.shape[1]
        # CE over the whole sequence (MimIC's labels=input_ids) needs the logits of every position, not the answer's.
        n_keep = batch["input_ids"].shape[1] - 1 if cfg.w_ce and cfg.ce_span == "sequence" else n_ans
        with amp:  # (B, n_keep, V), (B, L, A|S|n_keep, D)
            logits, hidden = _answer_logits(self.lm, batch, n_keep, align, cfg.teacher.hidden_site, span)
        labels = labels.to(logits.device)
        parts: dict[str, torch.Tensor] = {}
        if cfg.w_ce:
            parts["ce"] = self._ce(logits, labels, batch)
        logits = logits[:, -n_ans:]  # from here on: the answer positions only
        if cfg.w_mimicry and teacher is not None:
            parts["mimicry"] = self._mimicry(logits, labels, teacher, rows)
        if align:
            assert teacher is not None and hidden is not None  # `align` says so
            parts["align"] = self._align(hidden if span is not None else hidden[:, :, -n_ans:], labels, teacher, rows,
                                         lengths)
        if cfg.w_synergy:
            syn = losses.synergy(cfg.synergy, self._site("attn"), self._site("mlp"))
            if syn is not None:
                parts["synergy"] = syn
        weights = {"ce": cfg.w_ce, "mimicry": cfg.w_mimicry, "synergy": cfg.w_synergy, "align": cfg.w_align}
        total = sum(weights[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor, batch: dict) -> torch.Tensor:
        """Supervised CE on the answer tokens (M²IV); on the label's first token only (I2CL's original); or over the
        whole sequence, prompt included (MimIC's `labels=input_ids`), where `logits` holds every position."""
        if self.cfg.ce_span == "sequence":
            seq = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)
            return losses.supervised(logits, seq.to(logits.device))
        logits = logits[:, -labels.shape[1]:]
        if self.cfg.ce_span == "first":
            labels = labels.masked_fill(~losses.first_answer_position(labels != -100), -100)
        return losses.supervised(logits, labels)

    def _mimicry(self, logits: torch.Tensor, labels: torch.Tensor, teacher: TeacherTargets,
                 rows: list[int]) -> torch.Tensor:
        """KL to the cached teacher distributions at the answer positions (LIVE's original: all but the first)."""
        n = labels.shape[1]
        t_lab = _pad_left(teacher.labels[rows], n, -100)[:, -n:]
        if not torch.equal(t_lab.to(labels.device), labels):
            raise _stale(teacher, "answer tokens")
        vals = _pad_left(teacher.values[rows], n, 0.0)[:, -n:].to(logits.device)
        idx = None if teacher.index is None else _pad_left(teacher.index[rows], n, 0)[:, -n:].to(logits.device)
        positions = losses.answer_positions(labels != -100, self.cfg.kl_skip_first)
        return losses.mimicry(logits, vals, idx, positions, self.cfg.temperature, self.cfg.kl_eps)

    def _align(self, hidden: torch.Tensor, labels: torch.Tensor, teacher: TeacherTargets, rows: list[int],
               lengths: torch.Tensor | None) -> torch.Tensor:
        """MimIC's MSE to the teacher's per-layer states: at the answer tokens, or (`lengths` given, hidden_span=query)
        at every query + answer token, right-aligned in teacher and student."""
        assert teacher.hidden is not None
        n, mask = labels.shape[1], labels != -100
        if lengths is not None:
            if teacher.hidden_len is None or not torch.equal(teacher.hidden_len[rows], lengths):
                raise _stale(teacher, "query spans")
            n = hidden.shape[2]
            mask = (torch.arange(n)[None, :] >= (n - lengths)[:, None]).to(hidden.device)
        target = _pad_left(teacher.hidden[rows].transpose(1, 2), n, 0.0).transpose(1, 2).to(hidden.device)
        return losses.alignment(hidden, target, mask)

    def _site(self, site: str) -> torch.Tensor | None:
        return self.vectors.params[f"{site}__vector"] if site in self.vectors.sites else None

    @torch.no_grad()
    def evaluate(self, builder, queries: list[Sample], handle, batch_size: int = 8) -> float:
        """Teacher-forced exact match on `queries`: every answer token is the student's argmax."""
        if not queries:
            return 0.0
        hits = 0
        for i in range(0, len(queries), batch_size):
            batch, labels, query_start = student_batch(builder, queries[i:i + batch_size])
            handle.set_query_start(query_start)
            batch = {k: v.to(self.lm.device) for k, v in batch.items()}
            logits, _ = _answer_logits(self.lm, batch, labels.shape[1], False)
            labels = labels.to(logits.device)
            ok = (logits.argmax(-1) == labels) | (labels == -100)
            hits += int(ok.all(-1).sum())
        return hits / len(queries)

    # -- checkpoints ---------------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        self.saved_at = time.monotonic()
        if self.rank != 0:
            return
        tensors = {f"vectors.{k}": v.detach().cpu().contiguous() for k, v in self.vectors.params.items()}
        opt = self.opt.state_dict()
        for pid, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous() if torch.is_tensor(v) else torch.tensor(v)
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        meta = {"step": self.step, "best": self.best, "param_groups": opt["param_groups"],
                "history": self.history, "config": self.cfg.to_json(), "identity": self.identity}

        def write_tensors(path: Path) -> None:
            save_file(tensors, str(path))

        def write_meta(path: Path) -> None:
            path.write_text(json.dumps(meta, indent=1), encoding="utf-8")

        write_dir_atomic(self.workdir / CHECKPOINT,
                         {"state.safetensors": write_tensors, "trainer_state.json": write_meta})

    def _checkpoint_due(self) -> bool:
        cfg = self.cfg
        return (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
                or time.monotonic() - self.saved_at >= cfg.checkpoint_minutes * 60)

    def _load_checkpoint(self) -> bool:
        """Resume from the checkpoint if there is one; refuse one of another run or a corrupt one (kept)."""
        ck = self.workdir / CHECKPOINT
        if not (ck / "trainer_state.json").is_file():
            return False
        fix = f"use another --out, or add --overwrite (or delete {ck}) to start afresh"
        try:
            meta = json.loads((ck / "trainer_state.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            raise M2IVError(f"{ck}/trainer_state.json is corrupt ({type(e).__name__}: {e}); {fix}") from None
        if not isinstance(meta, dict) or not all(k in meta for k in ("step", "best", "param_groups", "history")):
            raise M2IVError(f"{ck}/trainer_state.json is incomplete (not written by this m2iv); {fix}")
        diff = identity_diff(meta.get("identity"), self.identity)
        if diff and not extends(meta.get("identity") or {}, self.identity, int(meta["step"])):
            more = " (to train a finished run further, repeat its command with --more-steps N)" \
                if diff == ["recipe.steps"] else ""
            raise M2IVError(f"{ck} holds a checkpoint of another run or other settings (differs in "
                            f"{', '.join(diff)}){more}; {fix}")
        try:
            t = load_file(str(ck / "state.safetensors"))
            with torch.no_grad():
                for k, p in self.vectors.params.items():
                    p.copy_(t[f"vectors.{k}"])
            state: dict[int, dict[str, torch.Tensor]] = {}
            for name, v in t.items():
                if name.startswith("opt."):
                    _, pid, key = name.split(".", 2)
                    state.setdefault(int(pid), {})[key] = v
            self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
            raise M2IVError(f"{ck}/state.safetensors is corrupt or incomplete ({type(e).__name__}: {e}); "
                            f"{fix}") from None
        best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
        self.best_state = best or None
        self.step, self.best, self.history = int(meta["step"]), meta["best"], list(meta["history"])
        return True

    # -- the loop ------------------------------------------------------------------------------------
    def optimizer_step(self, builder, queries: list[Sample], teacher: TeacherTargets | None, handle) -> dict:
        """One optimizer step (grad_accum micro-batches, all-reduced across ranks); its log record."""
        cfg = self.cfg
        t0 = time.perf_counter()
        scale = get_lr(self.step, cfg)
        for g, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * scale
        order = self._order(len(queries), self.step)
        total, parts_sum = 0.0, dict[str, float]()
        for m in range(cfg.grad_accum):
            rows = order[m * cfg.batch_size:(m + 1) * cfg.batch_size][self.rank::self.world]
            if not rows:
                continue
            loss, parts = self._loss(builder, [queries[r] for r in rows], teacher, rows, handle)
            (loss * len(rows) / (cfg.batch_size * cfg.grad_accum) * self.world).backward()
            total += float(loss.detach()) / cfg.grad_accum
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v / cfg.grad_accum
        if self.dist is not None:
            for p in self.trainable:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                self.dist.all_reduce(p.grad)
                p.grad /= self.world
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return {"step": self.step, "loss": round(total, 6), **{k: round(v, 6) for k, v in parts_sum.items()},
                "lr_scale": round(scale, 6), "grad_norm": round(float(norm), 6),
                "ms": round((time.perf_counter() - t0) * 1000, 1)}

    def _validate(self, builder, val: list[Sample], handle, rec: dict) -> None:
        """Validate on this step if due, keeping the best vectors so far."""
        cfg = self.cfg
        if not cfg.val_every or (self.step % cfg.val_every and self.step != cfg.steps):
            return
        acc = self.evaluate(builder, val, handle)
        rec["val_acc"] = acc
        if acc > self.best["metric"]:
            self.best = {"metric": acc, "step": self.step}
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.vectors.params.items()}

    def fit(self, builder, queries: list[Sample], teacher: TeacherTargets | None, val: list[Sample],
            stop_after: int | None = None, progress: Progress | None = None, tracker=None) -> Trainable:
        """Train and return the vectors of the best validation step (the last step without validation).

        A checkpoint is written before the first step (the teacher pass is then behind a killed run), every
        `checkpoint_every` steps, whenever `checkpoint_minutes` have passed since the last one, and at the end.
        `progress`: the job's progress line (phase "steps"); `tracker`: receives each step's record (`tracking`)."""
        cfg = self.cfg
        if not queries:
            raise M2IVError("no training queries; enlarge the task's train split")
        with writing(self.workdir):
            self.workdir.mkdir(parents=True, exist_ok=True)
        if not self._load_checkpoint():
            self._save_checkpoint()
        torch.manual_seed(cfg.seed)
        handle = attach(self.lm, self.vectors)
        bar = progress or Progress("train", [("steps", cfg.steps)], disable=not self.show_progress or bool(self.rank))
        bar.phases["steps"].total, bar.phases["steps"].done = cfg.steps, self.step
        bar.start("steps")
        log_path = self.workdir / TRAIN_LOG_NAME
        try:
            with writing(log_path), open(log_path, "w") as log:  # rewritten from the checkpoint's history
                log.writelines(json.dumps(rec) + "\n" for rec in self.history)
            while self.step < cfg.steps and (stop_after is None or self.step < stop_after):
                rec = self.optimizer_step(builder, queries, teacher, handle)
                self._validate(builder, val, handle, rec)
                self.history.append(rec)
                if self.rank == 0:
                    with writing(log_path), open(log_path, "a") as log:
                        log.write(json.dumps(rec) + "\n")
                    if tracker is not None:
                        tracker.log(rec, self.step)
                bar.set_postfix(loss=f"{rec['loss']:.4f}",
                                **({"val": f"{rec['val_acc']:.3f}"} if "val_acc" in rec else {}))
                bar.update("steps")
                if self._checkpoint_due():
                    self._save_checkpoint()
        finally:
            handle.remove()
            if progress is None:
                bar.close()
        best = type(self.vectors).from_spec(self.vectors.spec())  # type: ignore[attr-defined]
        if getattr(self.vectors, "condition", None) is not None:  # vectors keep their condition; adapters have none
            best = best.with_condition(self.vectors.condition)  # type: ignore[attr-defined]
        state = self.best_state if self.best_state is not None else {k: v.detach() for k, v in
                                                                      self.vectors.params.items()}
        with torch.no_grad():
            for k, p in best.params.items():
                p.copy_(state[k])
        return best
