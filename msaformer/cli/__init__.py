"""The ``msaformer`` command line: thin typer wrappers over library functions."""
