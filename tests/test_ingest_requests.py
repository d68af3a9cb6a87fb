"""How ingest sizes its import requests: full ones while many images are left, small ones at the end, so that what
is still to write when the scoring ends (and the run waits for it) stays small."""

from __future__ import annotations

import pytest

from detector_al.pipelines.ingest import TAIL_TASKS_PER_REQUEST, request_size


@pytest.mark.parametrize("left", [512, 513, 10_000])
def test_full_requests_while_a_full_one_is_left_to_score(left):
    assert request_size(512, left) == 512


@pytest.mark.parametrize("left", [0, 1, 63, 511])
def test_the_last_images_go_in_small_requests(left):
    assert request_size(512, left) == TAIL_TASKS_PER_REQUEST < 512


def test_a_request_is_never_larger_than_asked():
    assert request_size(16, 3) == 16 and request_size(16, 100) == 16


def test_the_end_of_a_run_lists_each_stored_failure_once_in_linear_time(tmp_path):
    """A folder with many unreadable files: the report lists each stored failure once, and listing 30,000 of them
    takes well under a second of comparisons (a list searched per row took minutes)."""
    import time
    from types import SimpleNamespace

    from detector_al.label_studio.config import parse_label_config
    from detector_al.pipelines.ingest import IngestConfig, ingest
    from detector_al.state.store import PoolRow, Store

    store = Store(tmp_path / "s.sqlite3")
    n = 30_000
    store.record_ingested(
        0, [PoolRow(f"{i:064x}", path=f"/pool/{i}.jpg", error="truncated", decision="error") for i in range(n)]
    )
    folder = tmp_path / "empty"
    folder.mkdir()
    config = '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image"><Label value="a"/></RectangleLabels></View>'
    det = SimpleNamespace(version="v", names=("a",), predict=lambda *a, **k: [])
    started = time.perf_counter()
    report = ingest(folder, det, store, parse_label_config(config, ("a",)), IngestConfig())
    assert time.perf_counter() - started < 10  # the rows' read included; the quadratic listing took minutes
    assert len(report.failed) == n and len(set(report.failed)) == n
