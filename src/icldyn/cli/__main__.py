"""`python -m icldyn.cli`: the same as the `icldyn` command."""

from icldyn.cli import main

main()
