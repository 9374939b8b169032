"""SIGTERM and SIGINT during a run: remembered so the loop saves at the next step boundary,
with a watchdog that ends the process when that boundary does not come."""

import os
import signal
import sys
import threading


class SignalFlag:
    """Remembers SIGTERM/SIGINT so the loop can save at the next step boundary, and makes
    sure the signal ends the process even if that boundary never comes.

    Python runs a signal handler only between bytecodes, so while the main thread waits inside
    a TensorFlow call (a step that waits for an input pipeline that yields nothing, say) the
    handler cannot run. A watchdog thread learns of the signal at once through the wakeup fd;
    if the loop has not begun to save within `grace` seconds (3x the longest step call so far,
    at least 30 s), it exits with 128 + the signal number, leaving the last checkpoint as it
    was. A second signal exits at once.

    Multi-worker runs pass no signals: saving is collective, so one worker saving on its own
    would wait forever for the others. There PreemptionCheckpointHandler owns SIGTERM and
    saves on every worker at the same step."""

    MIN_GRACE_SECONDS = 30.0

    def __init__(self, signums=(signal.SIGTERM, signal.SIGINT), log=print):
        self.received = None
        self.grace = self.MIN_GRACE_SECONDS
        self._signums = signums
        self._previous = {}
        self._log = log
        self._saving = threading.Event()
        self._pipe = None
        self._previous_wakeup_fd = None
        self._handled = 0

    def __enter__(self):
        for signum in self._signums:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        if self._previous:
            read_end, write_end = os.pipe()
            os.set_blocking(write_end, False)
            self._pipe = (read_end, write_end)
            self._previous_wakeup_fd = signal.set_wakeup_fd(write_end)
            threading.Thread(target=self._watch, args=(read_end,), daemon=True).start()
        return self

    def took(self, seconds):
        """The loop reports each step call's duration: the grace period follows it."""
        self.grace = max(self.grace, 3 * seconds)

    def saving(self):
        """The loop has reached the save: the watchdog stands down."""
        self._saving.set()

    def _handle(self, signum, frame):
        self._handled += 1
        if self._handled > 1 and not self._saving.is_set():
            self._exit(signum, "second signal")
        self.received = signum

    def _watch(self, read_end):
        while True:
            try:
                data = os.read(read_end, 1)
            except OSError:
                return
            if not data:
                return
            if data[0] not in self._signums:
                continue
            self.received = self.received or data[0]
            if not self._saving.wait(self.grace):
                self._exit(data[0], f"the step in progress did not end within {self.grace:.0f} s")

    def _exit(self, signum, why):
        self._log(
            f"{signal.Signals(signum).name}: {why}; exiting without saving (the last "
            "checkpoint is kept). Run again with the same --model_dir to resume."
        )
        sys.stdout.flush()
        os._exit(128 + signum)

    def __exit__(self, *exc):
        self._saving.set()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._pipe:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            for fd in self._pipe:
                os.close(fd)
