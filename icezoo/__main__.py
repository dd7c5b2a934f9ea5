"""``python -m icezoo ...`` (and ``torchrun --nproc-per-node N -m icezoo train ...``) runs the ``icezoo`` command."""

from icezoo.cli.main import main

if __name__ == "__main__":
    main()
