"""What the loop does at each step (keras_resnet.plan): pure rules, no TensorFlow."""

import subprocess
import sys

from keras_resnet import plan

RULES = dict(total_steps=100, steps_per_epoch=30, log_every=10, checkpoint_every=25)


def events(step, signalled=False, eval_every_epochs=1, evaluating=True):
    return plan.events_at(step, eval_every_epochs=eval_every_epochs, evaluating=evaluating,
                          signalled=signalled, **RULES)  # fmt: skip


def test_calls_end_at_every_log_save_epoch_and_the_last_step():
    stops, step = [], 0
    while step < RULES["total_steps"]:
        step = plan.next_stop(step, steps_per_execution=7, **RULES)
        stops.append(step)
    assert stops == [7, 10, 17, 20, 25, 30, 37, 40, 47, 50, 57, 60, 67, 70, 75, 80, 87, 90, 97, 100]


def test_what_happens_at_a_step():
    assert events(7) == plan.Events(False, False, False, False, False)
    assert events(10) == plan.Events(True, False, False, False, False)  # a log line
    assert events(25) == plan.Events(True, False, True, False, False)  # a checkpoint
    assert events(30) == plan.Events(True, True, True, True, False)  # epoch: save, evaluate
    assert events(100) == plan.Events(True, True, True, True, False)  # the last step
    assert not events(30, eval_every_epochs=2).evaluate and events(60, eval_every_epochs=2).evaluate
    assert not events(30, eval_every_epochs=0).evaluate and not events(30, evaluating=False).evaluate


def test_a_signal_saves_and_stops_without_evaluating_but_not_after_the_last_step():
    assert events(7, signalled=True) == plan.Events(True, False, True, False, True)
    assert events(30, signalled=True) == plan.Events(True, True, True, False, True)
    assert events(100, signalled=True).stop is False


def test_durations_and_no_tensorflow():
    assert plan.format_duration(3723) == "1:02:03" and plan.format_duration(None) == "?"
    assert plan.format_duration(float("nan")) == "?"
    # The rules import nothing but the standard library (loaded alone, without the package).
    probe = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('p', "
             f"{plan.__file__!r}); spec.loader.exec_module(importlib.util.module_from_spec(spec));"
             " print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"  # fmt: skip
