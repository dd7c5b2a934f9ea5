"""icezoo evaluate's per-task figures, plots and tables (icezoo.engine.task_eval), on stand-in tasks
with the Task interface and known answers; the end-to-end runs are in test_task_eval_cli."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from types import SimpleNamespace

from icezoo.engine.task_eval import evaluate_tasks, per_task, print_tasks
from icezoo.engine.task_metrics import scores_text


class _Stub:
    """The parts of a Task that the evaluation reads."""

    def __init__(self, family, column=None, outputs=(), labels=None, out_dim=2, **config):
        self.family, self._column, self._outputs, self._labels, self.out_dim = family, column, outputs, labels, out_dim
        self.config = SimpleNamespace(column=column, **config)

    def columns(self, config):  # called as type(task).columns(config): see _cls below
        raise AssertionError

    def valid(self, truth):
        cols = [self._column] if self._column else ["vertex_x", "vertex_y", "vertex_z"]
        ok = torch.ones(len(truth[cols[0]]), dtype=torch.bool)
        for c in cols:
            ok &= torch.isfinite(truth[c])
        return ok

    def labels(self):
        return self._labels

    def _classes(self, truth):
        y = truth[self._column]
        return torch.where(torch.isfinite(y), y, -1.0)

    def outputs(self, out):
        return {name: out[:, 0] for name in self._outputs}


def _task(family, column=None, outputs=(), labels=None, **config):
    cols = (column,) if column else ("vertex_x", "vertex_y", "vertex_z")
    cls = type(f"Stub_{family}", (_Stub,), {"columns": classmethod(lambda c, config: cols)})
    return cls(family, column, outputs, labels, **config)


def _data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    log_e = rng.uniform(2, 5, n)
    track = (rng.random(n) < 0.4).astype(float)
    vtx = rng.uniform(-400, 400, (n, 3))
    truth = {"energy": 10 ** log_e, "track": track, "vertex_x": vtx[:, 0], "vertex_y": vtx[:, 1],
             "vertex_z": vtx[:, 2], "inelasticity": rng.uniform(0, 1, n)}
    truth["energy"][:10] = np.nan  # events without truth are not scored
    p = 1 / (1 + np.exp(-(4 * track - 2 + rng.normal(0, 1, n))))
    cols = {"energy": log_e + rng.normal(0, 0.2, n), "energy_sigma": np.full(n, 0.2), "p_track": p,
            "vertex_x": vtx[:, 0] + rng.normal(0, 10, n), "vertex_y": vtx[:, 1] + rng.normal(0, 10, n),
            "vertex_z": vtx[:, 2] + rng.normal(0, 10, n), "vertex_sigma": np.full(n, 10.0),
            "inelasticity": truth["inelasticity"] + rng.normal(0, 0.05, n),
            "inelasticity_sigma": np.full(n, 0.05)}
    return truth, cols


def _model():
    tasks = {"energy": _task("energy", "energy", ("energy", "energy_sigma")),
             "event_type": _task("classification", "track", ("p_track",), ("cascade", "track")),
             "vertex": _task("vertex", None, ("vertex_x", "vertex_y", "vertex_z", "vertex_sigma")),
             "inelasticity": _task("regression", "inelasticity", ("inelasticity", "inelasticity_sigma"), log10=False)}
    return SimpleNamespace(tasks=tasks)


def test_each_family_gets_its_figures_with_intervals_and_plots(tmp_path, capsys):
    truth, cols = _data()
    model = _model()
    out = evaluate_tasks(model, per_task(model, cols), truth, tmp_path, "stub", n_boot=200)
    e = out["energy"]
    assert e["family"] == "energy" and e["figures"]["n_events"] == 2990  # 10 without a true energy
    assert e["score"] == pytest.approx(0.2, rel=0.08) and e["score_ci95"][0] < 0.2 < e["score_ci95"][1] * 1.05
    assert e["figures"]["sigma_coverage"] == pytest.approx(0.683, abs=0.03)
    assert len(e["figures"]["bands"]) == 3
    c = out["event_type"]
    assert c["label"] == "AUC" and 0.9 < c["score"] < 1.0 and c["figures"]["classes"] == ["cascade", "track"]
    assert sum(map(sum, c["figures"]["confusion"])) == 3000
    v = out["vertex"]
    assert v["figures"]["axes"]["z"]["resolution"] == pytest.approx(10, rel=0.1)
    assert v["score"] == pytest.approx(np.median(np.linalg.norm(np.random.default_rng(0).normal(0, 10, (30000, 3)), axis=1)),
                                       rel=0.08)
    r = out["inelasticity"]
    assert r["score"] == pytest.approx(0.05, rel=0.1)
    assert [p for t in out.values() for p in t["plots"]] == ["energy_energy.png", "event_type_roc.png",
                                                               "vertex_vertex.png", "inelasticity_regression.png"]
    assert all((tmp_path / p).is_file() for t in out.values() for p in t["plots"])
    print_tasks(out)
    text = capsys.readouterr().out
    for needle in ("task energy", "resolution", "per band", "ROC AUC", "median distance", "true track: predicted as"):
        assert needle in text
    text = scores_text(out)
    assert text.startswith(f"energy: log10 E res {e['score']:.4g} [") and "; event_type: AUC 0.9" in text
    assert "; vertex: median distance " in text


def test_multiclass_task_and_no_plots(tmp_path):
    rng = np.random.default_rng(1)
    n = 900
    y = rng.integers(0, 3, n).astype(float)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y.astype(int)] += 2
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = ("through_going_track", "starting_track", "cascade")
    task = _task("classification", "event_class", tuple(f"p_{lab}" for lab in labels), labels, out_dim=3)
    cols = {f"p_{lab}": prob[:, i] for i, lab in enumerate(labels)}
    out = evaluate_tasks(SimpleNamespace(tasks={"event_type": task}), {"event_type": cols}, {"event_class": y},
                         None, "stub", n_boot=100)
    f = out["event_type"]["figures"]
    assert set(f["per_class"]) == set(labels) and f["accuracy"] == pytest.approx(np.mean(prob.argmax(1) == y))
    assert out["event_type"]["plots"] == [] and not list(tmp_path.iterdir())
