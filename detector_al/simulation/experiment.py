"""The active-learning experiment with an oracle: does a strategy reach a given mAP with fewer labels?

Protocol (the lessons of ``shared/docs/active-learning.md``):

* **paired seeds**: every variant of a seed starts from the same initial labeled set and the same round-0
  weights;
* each round scores the unlabeled pool with the previous round's model through the **production policy**
  (:func:`~detector_al.policy.decision.decide` per image, :func:`~detector_al.queue.build.build_queue` over the pool: the
  code the backend and ingest run), labels the queue's batch of ``budget`` images (the oracle reveals their
  boxes), and trains the next model by the config's :class:`Recipe`; a round whose queue is empty (every image
  left auto-accepted or labeled) labels nothing and keeps its model, as the backend retrains by itself only after
  new annotations (``TRAIN_EVERY``);
* a variant is ``<strategy>[+div][+ceal][+boxes][+cold]``: any strategy of the registry (``entropy`` = ``entropy_sum``)
  or the control ``oracle`` (the images needing the most corrections first, counted against the oracle: what a perfect
  error-seeking score would pick), ``+div`` a k-center batch over the top candidates (else the plain top-``budget``),
  ``+ceal`` the round's auto-accepted images with the model's boxes as labels in that round's training set only (CEAL
  gated as the backend gates it: judged on the val split each round,
  :func:`~detector_al.policy.ceal_calibration.calibrate_ceal`, off when shown unsafe), ``+boxes`` box-level
  pseudo-labels (:func:`~detector_al.policy.box_pseudo_labels.box_pseudo_labels`) on the most certain images left (at
  most as many as are labeled), their doubtful regions blanked out, at the round's box confidence calibrated on the val
  split (:func:`~detector_al.policy.box_pseudo_labels.calibrate_box_pseudo_labels`; none when no threshold is safe),
  ``+cold`` a TypiClust batch while the model is cold (:func:`~detector_al.queue.build.cold_start_batch`), then the
  strategy;
* class-weighted strategies are built each round from the labeled set and the pool
  (:func:`~detector_al.policy.strategies.build_strategy`), as the backend builds them from its store;
* mAP50 and mAP50-95 on the fixed **val** split (for choosing recipes and defaults) and **test** split (the
  reported figures) after every round;
* the effort of every round's batch against the oracle: boxes to draw from scratch, corrections given the
  model's pre-annotations (:mod:`detector_al.simulation.effort`), and the annotator actions they take
  (:func:`~detector_al.policy.annotator_cost.annotator_actions`: priced in seconds by the report); CEAL
  pseudo-labels' box precision, and the auto-accepted images and boxes a review pass would look at.

Trainings are content-addressed (parent weights, training set, recipe): a variant whose round trains on the
same images as another's (``+ceal`` that accepted nothing, say) reuses that model, and a re-run resumes.
Results land in ``results.json`` after every round; :mod:`detector_al.simulation.report` summarises them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from detector_al.io.files import atomic_write
from detector_al.io.yolo_format import parse_yolo_lines, read_yolo_labels, yolo_lines
from detector_al.policy.annotator_cost import Actions, annotator_actions, scratch_actions
from detector_al.simulation.config import CONTROLS, RECIPES, SimConfig, epochs_for, parse_variant
from detector_al.simulation.dataset import SimDataset, prepare_dataset
from detector_al.simulation.training import evaluate_cached, initial_set, train_initial, train_round

log = logging.getLogger(__name__)


@dataclass
class RoundOutcome:
    """One round of one variant: the images labeled, the round's pseudo-labels, and their cost and quality."""

    chosen: list[Path]
    pseudo: dict[Path, list[str]] = field(default_factory=dict)
    masks: dict[Path, np.ndarray] = field(default_factory=dict)  # regions blanked out of pseudo-labeled images
    drawn: int = 0  # oracle boxes in the chosen images
    corrections: int = 0  # missed + spurious + relabeled boxes of their pre-annotations
    pseudo_boxes: int = 0
    pseudo_right: int = 0  # pseudo boxes matching an oracle box of the same class (IoU >= 0.5)
    pseudo_truth: int = 0  # oracle boxes in pseudo-labeled images
    pseudo_unseen: int = 0  # of those, neither pseudo-labeled nor masked: taught as background
    pseudo_threshold: float | None = None  # the round's calibrated box confidence (+boxes)
    actions: Actions = field(default_factory=Actions)  # what correcting the batch's pre-annotations takes
    accepted_images: int = 0  # CEAL auto-accepted images of the round (a review pass looks at them)
    accepted_boxes: int = 0
    ceal_gate: str = "off"  # the round model's CEAL verdict on the val split (policy.ceal_calibration.calibrate_ceal)


def play_round(
    ds: SimDataset, weights: Path, labeled: list[Path], unlabeled: list[Path], variant: str, cfg: SimConfig, seed, rnd
) -> RoundOutcome:
    """Score the pool with ``weights`` through the production policy and label the queue's batch."""
    from detector_al.model.detector import Detector
    from detector_al.policy.box_pseudo_labels import calibrate_box_pseudo_labels
    from detector_al.policy.ceal import CealConfig
    from detector_al.policy.decision import decide
    from detector_al.policy.settings import SCORER_CONF
    from detector_al.policy.strategies import build_strategy, random_score

    name, flags = parse_variant(variant)
    det = Detector.load(weights, conf=SCORER_CONF, imgsz=cfg.imgsz)
    preds = list(det.predict([str(x) for x in unlabeled]))
    counts = labeled_class_counts(ds, labeled)
    strategy = build_strategy("random" if name in CONTROLS else name, labeled_counts=counts, pool=preds)
    held_out = _held_out(ds, det) if flags & {"ceal", "boxes"} else ([], [])
    gate = _ceal_gate(*held_out, CealConfig(enabled="ceal" in flags))
    decisions = [decide(p, strategy, rnd, gate.apply(CealConfig(enabled="ceal" in flags))) for p in preds]
    scores = {p: random_score(p.name, seed * 1000 + rnd) for p in unlabeled} if name == "random" else None
    if name == "oracle":
        scores = oracle_scores(ds, unlabeled, decisions, seed * 1000 + rnd)
    labeled_emb = None
    if "cold" in flags:
        labeled_emb = np.stack([p.embedding for p in det.predict([str(x) for x in labeled]) if p.ok])
    chosen, pseudo = choose_from_decisions(unlabeled, decisions, cfg.budget, "div" in flags, scores, labeled_emb)
    outcome = RoundOutcome(chosen, pseudo, ceal_gate=gate.verdict)
    if "boxes" in flags:
        rule = calibrate_box_pseudo_labels(*held_out)
        _add_box_pseudo_labels(outcome, unlabeled, preds, decisions, len(labeled) + cfg.budget, rule)
    return _with_effort(ds, outcome, dict(zip(unlabeled, decisions, strict=True)))


def oracle_scores(ds: SimDataset, paths: list[Path], decisions: list, seed: int) -> dict[Path, float]:
    """The ``oracle`` control: ``errors + 0.5 * random`` per image, ``errors`` the corrections its pre-annotations
    need against the truth (:func:`~detector_al.simulation.effort.corrections`); the random half breaks ties."""
    from detector_al.policy.strategies import random_score
    from detector_al.simulation.effort import corrections

    return {
        p: corrections(d.shown, read_yolo_labels(ds.label_of(p), d.width, d.height)).errors
        + 0.5 * random_score(p.name, seed)
        for p, d in zip(paths, decisions, strict=True)
        if not d.error
    }


def labeled_class_counts(ds: SimDataset, labeled: list[Path]) -> np.ndarray:
    """Oracle boxes per class over the labeled images."""
    counts = np.zeros(len(ds.names), np.int64)
    for p in labeled:
        np.add.at(counts, read_yolo_labels(ds.label_of(p), 1, 1).class_id, 1)
    return counts


def _held_out(ds: SimDataset, det) -> tuple[list, list]:
    """The round model's predictions of the val split (labeled images it never trained on) and their truths: what
    this round's pseudo-label rules are judged on."""
    images = ds.images("val")
    preds = list(det.predict([str(p) for p in images]))
    return preds, [read_yolo_labels(ds.label_of(p), q.width, q.height) for p, q in zip(images, preds, strict=True)]


def _ceal_gate(preds: list, truths: list, base):
    """This round's CEAL gate (:func:`~detector_al.policy.ceal_calibration.calibrate_ceal`) on the held-out images,
    as the backend judges each model on its human validation split (:mod:`~detector_al.pipelines.ceal_gate`)."""
    from detector_al.policy.ceal_calibration import calibrate_ceal, ceal_evidence, pool_evidence

    found = (ceal_evidence(p, t, base) if p.ok else None for p, t in zip(preds, truths, strict=True))
    return calibrate_ceal(*pool_evidence(found), base)


def _add_box_pseudo_labels(outcome: RoundOutcome, paths: list[Path], preds: list, decisions: list, cap: int, rule):
    """Box pseudo-labels by ``rule`` (none if None) on at most ``cap`` images left out of the batch, lowest
    strategy score first."""
    from detector_al.policy.box_pseudo_labels import box_pseudo_labels

    outcome.pseudo_threshold = None if rule is None else rule.min_confidence
    if rule is None:
        return
    taken = set(outcome.chosen) | set(outcome.pseudo)
    order = sorted(
        (i for i, (p, d) in enumerate(zip(paths, decisions, strict=True)) if not d.error and p not in taken),
        key=lambda i: (decisions[i].score, paths[i].name),
    )
    for i in order:
        if len(outcome.masks) >= cap:
            break
        found = box_pseudo_labels(preds[i], rule)
        if len(found.boxes):
            b = found.boxes
            outcome.pseudo[paths[i]] = yolo_lines(b.xyxy, b.class_id, preds[i].width, preds[i].height)
            outcome.masks[paths[i]] = found.masked


def _with_effort(ds: SimDataset, out: RoundOutcome, decisions: dict) -> RoundOutcome:
    from detector_al.model.geometry import box_iou, match_boxes, same_class_matches
    from detector_al.simulation.effort import corrections

    for path in out.chosen:
        d = decisions[path]
        truth = read_yolo_labels(ds.label_of(path), d.width, d.height)
        fix = corrections(d.shown, truth)
        out.drawn += fix.drawn
        out.corrections += fix.errors
        out.actions = out.actions + annotator_actions(d.shown, truth)
    for path in out.pseudo:
        if path not in out.masks:  # an image-level (CEAL) pseudo-label, not +boxes
            out.accepted_images += 1
            out.accepted_boxes += len(out.pseudo[path])
    for path, lines in out.pseudo.items():
        d = decisions[path]
        truth = read_yolo_labels(ds.label_of(path), d.width, d.height)
        boxes = parse_yolo_lines(lines, d.width, d.height)
        pairs = match_boxes(boxes.xyxy, truth.xyxy)
        out.pseudo_boxes += len(boxes)
        out.pseudo_right += same_class_matches(boxes, truth)
        out.pseudo_truth += len(truth)
        masked = out.masks.get(path, np.zeros((0, 4), np.float32))
        seen = {j for _, j in pairs}
        if len(masked) and len(truth):
            seen |= set(np.flatnonzero(box_iou(truth.xyxy, masked).max(axis=1) >= 0.3).tolist())
        out.pseudo_unseen += len(truth) - len(seen)
    return out


def choose_from_decisions(
    paths: list[Path],
    decisions: list,
    budget: int,
    diversity: bool,
    scores: dict[Path, float] | None = None,
    labeled_embeddings: np.ndarray | None = None,
) -> tuple[list[Path], dict[Path, list[str]]]:
    """The production queue over a round's decisions: the batch (in queue order) and the CEAL pseudo-labels.

    The same :func:`~detector_al.queue.build.build_queue` the backend and ingest run; ``scores`` replaces the
    strategy's (the random baseline); with ``labeled_embeddings`` (the ``+cold`` variants), the images' highest
    box confidences go along, so a cold model's batch is :func:`~detector_al.queue.build.cold_start_batch`'s.
    """
    from detector_al.queue.build import QUERY, build_queue

    ok = [(path, d) for path, d in zip(paths, decisions, strict=True) if not d.error]
    pseudo = {
        path: yolo_lines(d.pseudo_labels.xyxy, d.pseudo_labels.class_id, d.width, d.height)
        for path, d in ok
        if d.accepted
    }
    if not ok:
        return [], pseudo
    accepted = np.array([d.accepted for _, d in ok])
    emb = np.stack([d.embedding for _, d in ok])
    top = None if labeled_embeddings is None else np.array([d.max_confidence for _, d in ok])
    scored = np.array([scores[path] if scores else d.score for path, d in ok], np.float64)
    queue = build_queue(
        scored, accepted, emb, budget, diversity=diversity, max_confidence=top, labeled_embeddings=labeled_embeddings
    )
    in_batch = sorted((e.position, i) for i, e in enumerate(queue) if e.status == QUERY)
    return [ok[i][0] for _, i in in_batch], pseudo


class Experiment:
    """One run of the protocol over a dataset (see the module docstring); ``run()`` resumes a stopped one."""

    def __init__(self, source: Path, out: Path, cfg: SimConfig) -> None:
        self.cfg, self.out = cfg, out.resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.ds = prepare_dataset(source.resolve(), self.out)
        self.recipe = RECIPES[cfg.recipe]
        self.file = self.out / "results.json"
        fresh = {"config": asdict(cfg), "recipe": asdict(self.recipe), "dataset": str(source), "runs": []}
        self.results = json.loads(self.file.read_text()) if self.file.exists() else fresh
        self.started = time.perf_counter()

    def run(self) -> dict:
        for variant in self.cfg.variants:
            parse_variant(variant)  # fail before hours of training, not after
        for seed in self.cfg.seeds:
            initial = initial_set(self.ds, self.cfg, seed)
            w0 = train_initial(self.ds, self.out, initial, self.cfg, seed)
            for variant in self.cfg.variants:
                self._variant(seed, variant, initial, w0)
        from detector_al.simulation.report import plot_learning_curves

        plot_learning_curves(self.results, self.out / "learning_curves.png")
        return self.results

    def _variant(self, seed: int, variant: str, initial: list[Path], w0: Path) -> None:
        truths = [read_yolo_labels(self.ds.label_of(p), 1, 1) for p in initial]
        drawn0 = sum(len(t) for t in truths)
        first = RoundOutcome([], drawn=drawn0, corrections=drawn0, actions=sum(map(scratch_actions, truths), Actions()))
        self._record(seed, variant, 0, initial, first, w0)  # no model yet: every arm draws the initial set
        labeled, weights = list(initial), w0
        for rnd in range(1, self.cfg.rounds + 1):
            done = self._done(seed, variant, rnd)
            if done and Path(done.get("weights", "")).is_file():  # resumed: the round's batch and model are known
                labeled += [self.ds.root / "images" / "pool" / n for n in done["chosen"]]
                weights = Path(done["weights"])
                continue
            taken = set(labeled)
            unlabeled = [p for p in self.ds.pool if p not in taken]
            o = play_round(self.ds, weights, labeled, unlabeled, variant, self.cfg, seed, rnd - 1)
            if not o.chosen:  # the queue ran dry: no new human label, so no retraining (as the backend does)
                log.info("seed %d %s round %d: the queue is empty at %d labels; the model stays", seed, variant, rnd,
                         len(labeled))  # fmt: skip
                self._record(seed, variant, rnd, labeled, RoundOutcome([], ceal_gate=o.ceal_gate), weights)
                continue
            labeled = labeled + o.chosen
            parent = str(weights if self.recipe.start == "previous" else w0)
            epochs = epochs_for(self.cfg, len(labeled) + len(o.pseudo))
            t0 = time.perf_counter()
            weights = train_round(
                self.ds, self.out, parent, labeled, o.pseudo, o.masks, epochs, self.recipe, self.cfg, seed
            )
            self._record(seed, variant, rnd, labeled, o, weights, train_s=time.perf_counter() - t0)

    def _done(self, seed: int, variant: str, rnd: int) -> dict | None:
        return next(
            (r for r in self.results["runs"] if (r["seed"], r["variant"], r["round"]) == (seed, variant, rnd)), None
        )

    def _record(self, seed, variant, rnd, labeled: list[Path], o: RoundOutcome, weights: Path, train_s=0.0) -> None:
        if self._done(seed, variant, rnd):
            return
        m = evaluate_cached(self.ds, weights, self.cfg.imgsz)
        row = {"seed": seed, "variant": variant, "round": rnd, "labeled": len(labeled), "pseudo": len(o.pseudo)}
        row |= {"drawn": o.drawn, "corrections": o.corrections}
        row |= {"pseudo_boxes": o.pseudo_boxes, "pseudo_right": o.pseudo_right}
        row |= {
            "pseudo_truth": o.pseudo_truth,
            "pseudo_unseen": o.pseudo_unseen,
            "pseudo_threshold": o.pseudo_threshold,
        }
        row |= m
        row |= {"actions": asdict(o.actions), "accepted_images": o.accepted_images, "accepted_boxes": o.accepted_boxes}
        row |= {"ceal_gate": o.ceal_gate}
        row |= {"chosen": [p.name for p in o.chosen], "weights": str(weights)}
        row |= {"train_s": round(train_s, 1), "elapsed_s": round(time.perf_counter() - self.started, 1)}
        self.results["runs"].append(row)
        with atomic_write(self.file) as f:
            json.dump(self.results, f, indent=1)
        log.info(
            "seed %d %-22s round %d: %3d labeled (+%d pseudo) test mAP50 %.3f (val %.3f), batch %d boxes, %d fixes",
            seed, variant, rnd, len(labeled), len(o.pseudo), m["map50"], m["val_map50"], o.drawn, o.corrections,
        )  # fmt: skip


def run_simulation(source: Path, out: Path, cfg: SimConfig) -> dict:
    """Run (or resume) the experiment; returns and writes ``out/results.json``."""
    return Experiment(source, out, cfg).run()
