"""`icldyn diagnose`: developmental diagnostics of a stored run (LLC, essential dynamics; issue 20)."""

from icldyn.diagnose.core import DiagnoseSettings, Diagnosis, EssentialSettings, diagnose, parse_settings

__all__ = ["DiagnoseSettings", "Diagnosis", "EssentialSettings", "diagnose", "parse_settings"]
