"""An in-memory Label Studio project with the SDK calls a retraining makes (the real ones run in tests/integration):
keyset task pages with the Data Manager's ``id`` and ``total_annotations`` filters, prediction imports, the
``delete_tasks_predictions`` action, ``DELETE /api/projects/<id>/model-versions/``, task updates. Every call is
counted in ``calls``."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from types import SimpleNamespace


def labels(task: dict) -> int:
    """Label Studio's ``total_annotations``: annotations that are not skips."""
    return sum(not a.get("was_cancelled") for a in task["annotations"])


class FakeLabelStudio:
    def __init__(self, tasks: list[dict], sampling: str = "Uncertainty sampling", model_version: str | None = None):
        """``tasks``: ``{"id", "data", "annotations": [...], "predictions": [...]}`` dicts."""
        self.url, self.api_key = "http://ls.invalid", ""
        self.tasks = {int(t["id"]): {"annotations": [], "predictions": [], **t} for t in tasks}
        self.project = SimpleNamespace(sampling=sampling, model_version=model_version, label_config="")
        self.calls: Counter = Counter()
        self.fail: dict[str, BaseException] = {}  # a call name -> what it raises (once)
        self.ids = itertools.count(1)
        self.ls = SimpleNamespace(
            tasks=SimpleNamespace(list=self._list, update=self._update),
            projects=SimpleNamespace(get=self._get, update=self._project_update, import_predictions=self._import),
            predictions=SimpleNamespace(list=self._predictions),
            actions=SimpleNamespace(create=self._action),
            _client_wrapper=SimpleNamespace(httpx_client=SimpleNamespace(request=self._http)),
        )

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if name in self.fail:
            raise self.fail.pop(name)

    # -- tasks ----------------------------------------------------------------------------------------------
    def _list(self, project, fields="all", query=None, page=1, page_size=100, **_):
        self._call("tasks.list")
        q = json.loads(query or "{}")
        found = sorted(self.tasks.values(), key=lambda t: t["id"])
        for item in (q.get("filters") or {}).get("items", []):
            found = [t for t in found if _match(t, item)]
        selected = q.get("selectedItems")
        if selected and not selected.get("all"):
            found = [t for t in found if t["id"] in set(selected.get("included", []))]
        items = found[(page - 1) * page_size : page * page_size]
        return SimpleNamespace(items=[self._view(t, fields) for t in items])

    def _view(self, t: dict, fields: str):
        base = {"id": t["id"], "data": dict(t["data"]), "total_annotations": labels(t)}
        base["total_predictions"] = len(t["predictions"])
        if fields == "all":
            base["annotations"] = [dict(a) for a in t["annotations"]]
            base["predictions"] = [SimpleNamespace(**p) for p in t["predictions"]]
        return SimpleNamespace(**base)

    def _update(self, id, data):
        self._call("tasks.update")
        self.tasks[int(id)]["data"] = dict(data)

    # -- project --------------------------------------------------------------------------------------------
    def _get(self, id):
        self._call("projects.get")
        return SimpleNamespace(**vars(self.project))

    def _project_update(self, id, **fields):
        self._call("projects.update")
        for k, v in fields.items():
            setattr(self.project, k, v)

    def _import(self, id, request):
        self._call("projects.import_predictions")
        for r in request:
            pid = next(self.ids)
            self.tasks[int(r["task"])]["predictions"].append({**r, "id": pid})

    # -- predictions ----------------------------------------------------------------------------------------
    def _predictions(self, project=None, task=None):
        self._call("predictions.list")
        tasks = self.tasks.values() if task is None else [self.tasks[int(task)]]
        return [SimpleNamespace(**p) for t in tasks for p in t["predictions"]]

    def _action(self, id, project, selected_items=None, filters=None, **_):
        self._call(f"actions.{id}")
        assert id == "delete_tasks_predictions", id
        chosen = [t for t in self.tasks.values() if all(_match(t, item) for item in (filters or {}).get("items", []))]
        if selected_items and not selected_items.get("all"):
            chosen = [t for t in chosen if t["id"] in set(selected_items["included"])]
        for t in chosen:
            t["predictions"] = []

    def _http(self, path, method, json=None, **_):
        self._call(f"http.{method} {path}")
        assert path.endswith("/model-versions/"), path
        if method == "DELETE":
            n = 0
            for t in self.tasks.values():
                keep = [p for p in t["predictions"] if p["model_version"] != json["model_version"]]
                n += len(t["predictions"]) - len(keep)
                t["predictions"] = keep
            body = {"deleted_predictions": n}
        else:
            body = dict(Counter(p["model_version"] for t in self.tasks.values() for p in t["predictions"]))
        return SimpleNamespace(raise_for_status=lambda: None, json=lambda: body, status_code=200)

    def versions(self, task_id: int) -> list[str]:
        return [p["model_version"] for p in self.tasks[task_id]["predictions"]]


def _match(t: dict, item: dict) -> bool:
    field = item["filter"].rsplit(":", 1)[-1]
    skips = sum(bool(a.get("was_cancelled")) for a in t["annotations"])
    value = {"id": t["id"], "total_annotations": labels(t), "cancelled_annotations": skips}[field]
    return {"greater": value > item["value"], "equal": value == item["value"]}[item["operator"]]
