"""Repository-wide pytest options."""


def pytest_addoption(parser):
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run the benchmarks at every size with many rounds (default: one smoke round each)",
    )
