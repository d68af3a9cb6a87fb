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
