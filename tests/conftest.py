import pytest

from .redis_server import redis_server  # noqa: F401 - the fixture, for every test


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp runs on asyncio only.
    return "asyncio"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", help="run the reliability soak 10x longer (local use)"
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--soak", default=False):
        import os

        os.environ["NANOBANANA_SOAK"] = "10"
