"""The stages a command runs: prepare the data, build, fit, select, evaluate."""
