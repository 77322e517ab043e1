"""Errors that vislab reports to users as one readable paragraph (the CLI exits with code 2)."""


class VislabError(Exception):
    """A mistake in the user's input (config, data, paths): shown without a traceback."""


class ConfigError(VislabError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


class DataError(VislabError):
    """A data set that cannot be loaded; the message names the file or folder and how to fix it."""


class TrainingDiverged(VislabError):
    """The loss or the weights became NaN or infinite."""


class Interrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after finishing the step in progress (CLI exit 128 + signum)."""

    def __init__(self, signum: int, epoch: int, step: int, *, mid_epoch: bool = False):
        import signal

        # step: steps of the epoch done; mid_epoch: a resume continues after that step (else from the epoch's start)
        self.signum, self.epoch, self.step, self.mid_epoch = signum, epoch, step, mid_epoch
        self.run_dir: str | None = None  # filled in by vislab.train
        super().__init__(f"{signal.Signals(signum).name} received in epoch {epoch} after step {step}")
