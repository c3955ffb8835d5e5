"""No secret in any output, whatever carries it: log values of every type (bytes, sets, dict keys,
objects whose repr holds it), warnings, tracebacks, and the one-line errors `run` and `check-config`
print for a plugin that quotes its config. Plus a Hypothesis property over arbitrary values, through
both renderers."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import cli, secrets
from tests.test_logs import configure, lines, restore_logging, secret_value

__all__ = ["restore_logging"]  # the fixture, used here by name

log = structlog.get_logger("bridge.test_secrets")


class Holder:
    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Holder(key={self.key!r})"


def test_every_value_type_is_scrubbed() -> None:
    """bytes, bytearray, sets, tuples, dict keys and values, nested containers, exceptions and objects
    whose repr holds the secret: none of it reaches the line."""
    key = secret_value()
    secrets.register(key)
    for fmt in ("json", "console"):
        stream = configure(fmt)
        log.info(
            "t.leak",
            raw=key.encode(),
            buf=bytearray(key.encode()),
            tags={key, "x"},
            pair=("a", key),
            by_key={key: 1},
            nested={"a": [{"b": (key,)}]},
            error=RuntimeError(f"bad key {key}"),
            obj=Holder(key),
        )
        text = "\n".join(lines(stream))
        assert "t.leak" in text and key not in text, text


def test_warnings_and_tracebacks_are_scrubbed() -> None:
    """A warnings.warn() and a logged traceback quoting the secret are written scrubbed."""
    key = secret_value()
    secrets.register(key)
    stream = configure("json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # pytest records warnings by swapping warnings.showwarning; put the logging hook that
        # configure() installs back in place for this block, as it is outside pytest.
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        warnings.warn(f"deprecated call with {key}", UserWarning, stacklevel=1)
    try:
        raise ValueError(f"refused {key}")
    except ValueError:
        log.exception("t.failed")
    text = stream.getvalue()
    assert "deprecated call with ***" in text and "refused ***" in text and key not in text


def test_plugin_errors_printed_by_check_config_are_scrubbed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plugin whose constructor quotes a secret from the config: check-config prints one scrubbed line."""
    key = secret_value()
    plugin = tmp_path / "leaky.py"
    plugin.write_text(
        "from bridge import Strategy\n"
        "class Leaky(Strategy):\n"
        "    def __init__(self, name, params):\n"
        "        raise ValueError('cannot use ' + params['token'])\n"
    )
    (tmp_path / "token").write_text(key)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f'feed: {{api_key: "${{file:{tmp_path / "token"}}}"}}\n'
        f'strategies: [{{name: l, module: {plugin}, params: {{token: "${{file:{tmp_path / "token"}}}"}}}}]\n'
    )
    assert cli.main(["check-config", "-c", str(cfg)]) == 78
    err = capsys.readouterr().err
    assert "cannot use ***" in err and key not in err


SECRET = "sk-property-" + "9f3a7c1e5b2d4a6f"
_plain = st.text(alphabet=st.characters(blacklist_characters="s"), max_size=20)
_leaf = st.one_of(
    _plain,
    _plain.map(lambda t: t + SECRET),
    st.binary(max_size=10).map(lambda b: b + SECRET.encode()),
    st.integers(),
    st.none(),
)
_values = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(_plain, inner, max_size=3),
        st.dictionaries(_plain.map(lambda t: SECRET + t), inner, max_size=2),
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values, fmt=st.sampled_from(["json", "console"]))
def test_no_value_renders_a_secret(value: object, fmt: str) -> None:
    """Property: whatever nesting of text, bytes, numbers, lists, tuples and dicts (keys included)
    carries a registered secret, the rendered line (JSON or console) never contains it."""
    secrets.register(SECRET)
    stream = configure(fmt)
    log.info("t.prop", value=value)
    assert SECRET not in stream.getvalue()
