"""What the training loop does at a step: pure arithmetic, no TensorFlow.

The loop runs the steps between two stops in one call (at most steps_per_execution), and at a
stop reads its metrics, saves, evaluates or ends, as `events_at` says. Kept apart so that the
rules can be read, and tested, on their own.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Events:
    """What happens after `step`: read_metrics (sync, log, summaries; always before a save, so
    a diverged run is never saved), epoch_end, save, evaluate, stop (a signal ends the run)."""

    read_metrics: bool
    epoch_end: bool
    save: bool
    evaluate: bool
    stop: bool


def next_stop(step, *, total_steps, steps_per_epoch, log_every, checkpoint_every,
              steps_per_execution):  # fmt: skip
    """The step at which the call starting after `step` ends: the next epoch end, log line or
    checkpoint, at most steps_per_execution steps on, and never past total_steps."""
    boundaries = (steps_per_epoch, log_every, checkpoint_every)
    stop = min(min((step // b + 1) * b for b in boundaries), total_steps)
    return min(stop, step + steps_per_execution)


def events_at(step, *, total_steps, steps_per_epoch, log_every, checkpoint_every,
              eval_every_epochs, evaluating, signalled):  # fmt: skip
    """The Events after `step`. Evaluation comes at the end of every eval_every_epochs-th
    epoch (and of the run) when `evaluating`; a signal saves and stops unless the run is done
    anyway."""
    epoch_end = step % steps_per_epoch == 0 or step == total_steps
    stop = signalled and step < total_steps
    save = epoch_end or step % checkpoint_every == 0 or stop
    evaluate = (
        epoch_end
        and evaluating
        and not stop
        and eval_every_epochs > 0
        and (step // steps_per_epoch) % eval_every_epochs == 0
    )
    return Events(
        read_metrics=step % log_every == 0 or save,
        epoch_end=epoch_end,
        save=save,
        evaluate=evaluate,
        stop=stop,
    )


def format_duration(seconds):
    """1:02:03 for 3723 seconds; "?" when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
