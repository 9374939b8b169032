"""flags.txt's first and last lines, and the check that a flags.txt given to --flagfile is
whole: one cut short (an interrupted copy) would otherwise run with the defaults of the
flags it lost. Standard library only: the trainers check before Keras and TensorFlow load."""

HEADER = ("# The settings of this run as trainer flags (written by keras_resnet at each start; "
          "its last line says it ends there).")  # fmt: skip
END = "# end of the run's flags"


def problem(path):
    """Why the flagfile at `path` is damaged (one line), or None. Only files that begin with
    HEADER are checked: other flagfiles, and flags.txt of older versions, have no END."""
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    if lines and lines[0] == HEADER and lines[-1] != END:
        return (f"--flagfile={path}: is damaged (cut short: its last line is not {END!r}); "
                "restore it from a copy, or give the run's flags yourself (its run.json "
                'records them under "flags")')  # fmt: skip
    return None
