"""The top-level conftest: the eventworker_worker fixture of eventworker.testing for every test
directory (tests/, examples/plugin/tests/, docs/examples/), as a plugin author would enable it.

Loaded here rather than through a pytest11 entry point so that pytest-cov is already measuring
when eventworker is first imported.
"""

pytest_plugins = ["eventworker.testing"]
