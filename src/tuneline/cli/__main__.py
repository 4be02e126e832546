"""``python -m tuneline.cli``: what distributed training and launch targets start workers with."""

from tuneline.cli.app import main

main()
