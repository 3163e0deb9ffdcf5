import pytest

from fanflow.ml import ParameterError
from fanflow.ml.budget import EarlyStopping, check_budget, duration, plan


def test_the_budget_scales_with_the_data_between_a_floor_and_a_cap():
    big = plan(6000, 32, epochs=8, min_steps=1500, max_steps=6000)
    assert (big.steps_per_epoch, big.epochs, big.steps) == (188, 8, 1504)
    small = plan(1680, 32, epochs=8, min_steps=1500, max_steps=6000)  # 8 passes would be 424 steps
    assert small.steps >= 1500 and small.epochs == 29
    huge = plan(100_000, 32, epochs=8, min_steps=1500, max_steps=6000)
    assert huge.steps <= 6000 and huge.epochs == 1
    assert plan(10, 32, epochs=1, min_steps=0, max_steps=10).epochs == 1
    assert plan(6000, 32, 8, 1500, 6000, warmup=0.25).warmup_epochs == 2
    # early stopping waits for the warm-up and, by default, a quarter of the budget after it
    assert plan(1680, 32, 8, 1500, 6000, warmup=0.25).earliest_stop == 8 + 8
    assert plan(1680, 32, 8, 1500, 6000, warmup=0.25, min_epochs=1).earliest_stop == 9


def test_early_stopping_waits_for_the_warm_up_and_the_minimum_then_for_patience():
    stopper = EarlyStopping(patience=2, earliest_stop=5)
    # a flat loss through the warm-up: no stop before epoch 5
    decisions = [stopper.update(epoch, 0.69) for epoch in range(1, 6)]
    assert [stop for _, stop in decisions] == [False, False, False, False, True]
    stopper = EarlyStopping(patience=2)
    assert stopper.update(1, 0.5) == (True, False)
    assert stopper.update(2, 0.4) == (True, False)
    assert stopper.update(3, 0.3999999) == (False, False)  # too small an improvement
    assert stopper.update(4, 0.45) == (False, True)
    assert stopper.best_epoch == 2


def test_budget_settings_are_checked():
    check_budget(8, 0, 10, 1, 0)
    with pytest.raises(ParameterError, match="min_steps \\(20\\) is above max_steps \\(10\\)"):
        check_budget(8, 20, 10, 1, 0)
    with pytest.raises(ParameterError, match="patience: expected an integer >= 1"):
        check_budget(8, 0, 10, 0, 0)


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
