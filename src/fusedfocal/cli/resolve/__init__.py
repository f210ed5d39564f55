"""The resolver: the flags and the data into one typed, frozen spec."""
