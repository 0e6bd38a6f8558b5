"""The demo model's patient split: no patient on both sides, and the same split every time."""

from __future__ import annotations

import numpy as np

from inference.models.chexnet import LABELS
from inference.training.demo_cxr_data import split_by_patient


def test_the_split_keeps_each_patient_on_one_side_and_repeats() -> None:
    names = [f"{patient:08d}_{visit:03d}.png" for patient in range(40) for visit in range(patient % 3 + 1)]
    labels = np.zeros((len(names), len(LABELS)))
    labels[::5, 1] = 1
    train, test = split_by_patient(names, labels, test_fraction=0.25, seed=7)
    assert sorted(np.concatenate([train, test])) == list(range(len(names)))
    assert not {names[i][:8] for i in train} & {names[i][:8] for i in test}
    assert 8 <= len({names[i][:8] for i in test}) <= 12
    again_train, again_test = split_by_patient(names, labels, test_fraction=0.25, seed=7)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
