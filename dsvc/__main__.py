"""`python -m dsvc` runs the command line."""

from dsvc.cli import main

main(prog_name="dsvc")
