"""``python -m msaformer ...``: the ``msaformer`` command (a launcher entry point, like the console script)."""

from msaformer.cli.main import main

if __name__ == "__main__":
    main()
