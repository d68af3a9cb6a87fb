"""MI-AOD's instance attention over boxes, and value per expected annotator second: hand-built confidences."""

from __future__ import annotations

import numpy as np
import pytest

from detector_al.policy.annotator_cost import CostModel
from detector_al.policy.formulas.box_uncertainty import binary_entropy
from detector_al.policy.formulas.cost_aware import attended_entropy, expected_seconds, return_on_investment
from detector_al.policy.strategies import SERVING_STRATEGIES, STRATEGIES


def test_attention_lets_the_confident_boxes_decide():
    # one confident, doubtful object among many near-background boxes: the attention sits on the object
    objects = np.array([0.6])
    background = np.full(30, 0.06)
    mixed = attended_entropy(np.concatenate([objects, background]))
    assert mixed > binary_entropy(background).mean()  # a plain mean is drowned by the background boxes
    assert mixed == pytest.approx(float(binary_entropy(objects)[0]), rel=0.35)
    assert attended_entropy(np.array([])) == 0.0
    assert attended_entropy(np.array([0.5, 0.5])) == pytest.approx(np.log(2))  # equal weights: the mean


@pytest.mark.parametrize(
    ("confidence", "seconds"),
    [
        ([], 3.0),  # only a look
        ([1.0], 3.0 + 1.6),  # a sure box: a verification
        ([0.5], 3.0 + 0.5 * 1.6 + 0.5 * (2.0 + 25.5)),
        ([0.2], 3.0 + 0.2 * 25.5),  # below the cut: a likely missed object
    ],
)
def test_expected_seconds_follow_the_cost_model(confidence, seconds):
    assert expected_seconds(np.array(confidence)) == pytest.approx(seconds)
    assert expected_seconds(np.array(confidence), cost=CostModel(look_image=0.0)) == pytest.approx(seconds - 3.0)


def test_return_on_investment_prefers_the_cheaper_of_two_equally_uncertain_images():
    cheap = np.array([0.5])
    dear = np.array([0.5, 0.5, 0.5])
    assert return_on_investment(1.0, cheap) > return_on_investment(1.0, dear)
    assert {"entropy_mil", "entropy_roi"} <= set(SERVING_STRATEGIES) and STRATEGIES["entropy_roi"].scale > 0
