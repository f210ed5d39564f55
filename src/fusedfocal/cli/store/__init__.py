"""The run folder: its files, checkpoints, reports and logs."""
