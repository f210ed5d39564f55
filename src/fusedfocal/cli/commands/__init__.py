"""The commands: one thin module each, parse -> resolve -> run the stages -> report."""
