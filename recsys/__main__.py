"""`python -m recsys` runs the command line (also what `torchrun -m recsys` starts)."""

from recsys.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
