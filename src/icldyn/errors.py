"""The two kinds of failure a user sees, each with its exit code (DESIGN.md: exit codes)."""


class UsageError(Exception):
    """Bad input: one clear sentence naming the field and the allowed values. Exit code 2."""

    exit_code = 2


class DivergedError(Exception):
    """Training hit a NaN/inf loss; the last good state was kept. Exit code 3."""

    exit_code = 3


class EnvironmentFailure(Exception):
    """The environment failed the run (disk full, no permission to write, a worker killed from
    outside); the last good checkpoint and metrics were kept. Exit code 4."""

    exit_code = 4
