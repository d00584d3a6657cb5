"""`icldyn diagnose`: developmental diagnostics of a stored run (LLC, essential dynamics; issue 20)."""
