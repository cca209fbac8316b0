"""Registers ``bench.launcher.SlurmLauncher`` with Hydra: launcher plugins must live in the
``hydra_plugins`` namespace package (``_target_: hydra_plugins.segloss_launcher.SlurmLauncher``)."""

from bench.launcher import SlurmLauncher as _SlurmLauncher


class SlurmLauncher(_SlurmLauncher):
    pass
