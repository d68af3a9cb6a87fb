"""A project's tasks a page at a time, in id order: what a job reads of a project of any size in bounded memory.

Label Studio's task list (``GET /api/tasks``, label-studio-sdk's ``tasks.list``) pages by number, and the SDK's pager
asks for one page past the end (a 404 "Invalid page"). A number-paged listing also shifts when tasks are labeled or
deleted while it runs. So the pages here are keyset pages: the Data Manager query ``id > <last id seen>``, ordered
by id, ``page_size`` tasks each, one request a page; a task labeled meanwhile is simply where it belongs when its page
is read.

``labeled`` filters on Label Studio's own counter ``total_annotations`` (annotations that are not skips: exactly the
tasks :func:`~detector_al.label_studio.annotations.is_labeled` finds labeled), so a job that needs only the labeled
tasks' annotations never lists the pool's predictions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

PAGE_SIZE = 200
"""Tasks per request: a page of 200 tasks with their predictions is a few hundred kB."""


def count_filter(counter: str, operator: str, value: int = 0) -> dict:
    """A Data Manager filter on a task counter (``total_annotations``, ``cancelled_annotations``, ...)."""
    return {"filter": f"filter:tasks:{counter}", "operator": operator, "type": "Number", "value": value}


def task_query(after: int, labeled: bool | None = None, skipped: bool = False) -> str:
    """The Data Manager query of one keyset page: tasks with ``id > after`` (and ``total_annotations > 0`` when
    ``labeled``, ``== 0`` when not labeled; with ``skipped`` also ``cancelled_annotations > 0``), by id."""
    items = [{"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": after}]
    if labeled is not None:
        items.append(count_filter("total_annotations", "greater" if labeled else "equal"))
    if skipped:
        items.append(count_filter("cancelled_annotations", "greater"))
    return json.dumps({"filters": {"conjunction": "and", "items": items}, "ordering": ["tasks:id"]})


def iter_task_pages(
    ls,
    project: int,
    *,
    labeled: bool | None = None,
    skipped: bool = False,
    fields: str = "all",
    page_size: int = PAGE_SIZE,
) -> Iterator[list]:
    """The project's tasks as lists of at most ``page_size`` tasks, by id (see the module docstring).

    Args:
        ls: a ``label_studio_sdk.LabelStudio`` client.
        labeled: True: only labeled tasks; False: only unlabeled ones (a skip is not a label); None: all.
        skipped: only tasks with a skip (``was_cancelled``) among their annotations.
        fields: ``"all"`` (annotations and predictions included) or ``"task_only"`` (data and counters).
    """
    after = -1
    while True:
        page = ls.tasks.list(
            project=project, fields=fields, query=task_query(after, labeled, skipped), page=1, page_size=page_size
        )
        tasks = list(page.items or [])
        if not tasks:
            return
        yield tasks
        if len(tasks) < page_size:
            return
        after = max(int(t.id) for t in tasks)


def iter_tasks(ls, project: int, **kwargs) -> Iterator:
    """:func:`iter_task_pages`, one task at a time."""
    for page in iter_task_pages(ls, project, **kwargs):
        yield from page
