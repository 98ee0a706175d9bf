"""Guest side of the lab: the scenario runner (``python -m lab.guest RUN_DIR``)."""
