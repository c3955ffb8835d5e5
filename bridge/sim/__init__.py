"""Simulators that ship with bridge, as aiohttp ships `aiohttp.test_utils`: a local cryptolisting.ws
look-alike (`emulator`), a local fake exchange REST API for real ccxt code (`fake_exchange`), and the
offline demo built on both (`demo`). Used by the tests, the benchmark, `bridge demo`, `bridge emulate`
and `bridge fake-exchange`. The money path never imports them: only sim itself, the CLI and the
tests may (an import contract in pyproject.toml).
"""
