"""No secret in any output, whatever carries it: log values of every type (bytes, sets, dict keys,
objects whose str or repr holds it), its encoded forms, warnings, tracebacks (logged, uncaught, in a
thread), a failed log write, the lines the CLI prints for plugin errors (run and check-config) and
daemon answers, show-config and list-strategies, and alerts. Text is scrubbed before it is cut."""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import logging
import subprocess
import sys
import textwrap
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import structlog

from bridge import cli, secrets
from bridge import config as config_mod
from bridge.config import AlertsConfig
from bridge.ops.control import ControlServer, socket_path
from bridge.ops.notify import TELEGRAM_MAX_TEXT, Notifier
from tests.test_logs import configure, lines, restore_logging, secret_value
from tests.test_notify import WAIT, Endpoint, endpoints, telegram, webhook

__all__ = ["endpoints", "restore_logging"]  # fixtures, used here by name

log = structlog.get_logger("bridge.test_secrets")
ROOT = Path(__file__).resolve().parent.parent


class Holder:
    """An object that keeps a key and shows it in its repr (and so in its str)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"Holder(key={self.key!r})"


class Chatty:
    def __init__(self, key: str) -> None:
        self.key = key

    def __str__(self) -> str:
        return f"connected with {self.key}"


class Broken:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class Level(enum.IntEnum):
    HIGH = 3


def nested(depth: int, leaf: object) -> object:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def leaked(text: str, key: str) -> bool:
    """Whether `text` shows `key` or any encoded form of it (a repr- or JSON-escaped one included)."""
    return any(form in text for form in secrets.variants(key))


# ---- log values of every type --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_value_type_is_scrubbed(fmt: str) -> None:
    """bytes, bytearray, memoryview, sets, frozensets, tuples, dict keys and values, a key of the event
    itself, nested and over-deep containers, a list holding itself, exceptions, a Secret, and objects
    whose str or repr holds the secret: none of it reaches the line, in either renderer."""
    key = secret_value()
    secrets.register(key)
    loop: list[object] = [key]
    loop.append(loop)
    stream = configure(fmt)
    log.info(
        "t.leak",
        raw=key.encode(),
        buf=bytearray(key.encode()),
        view=memoryview(key.encode()),
        tags={key, "x"},
        frozen=frozenset({key}),
        pair=("a", key),
        by_key={key: 1, (key, 2): 3},
        nested={"a": [{"b": (key,)}]},
        deep=nested(secrets.MAX_DEPTH + 5, key),
        loop=loop,
        error=RuntimeError(f"bad key {key}"),
        obj=Holder(key),
        chatty=Chatty(key),
        wrapped=secrets.Secret(key),
        **{f"field_{key}": "named by the key"},
    )
    text = stream.getvalue()
    assert "t.leak" in text and "named by the key" in text
    assert not leaked(text, key), text


def test_numbers_and_enums_stay_numbers() -> None:
    """Scrubbing turns values into plain data without changing what numbers say: an IntEnum renders as
    its number, booleans and None as themselves."""
    stream = configure("json")
    log.info("t.numbers", level_=Level.HIGH, ratio=0.5, flag=True, nothing=None)
    event = json.loads(lines(stream)[-1])
    assert (event["level_"], event["ratio"], event["flag"], event["nothing"]) == (3, 0.5, True, None)


def test_an_unprintable_value_does_not_lose_the_line() -> None:
    """An object whose __str__ raises is shown by its type; the rest of the line (scrubbed) is written."""
    key = secret_value()
    secrets.register(key)
    stream = configure("json")
    log.warning("t.broken", obj=Broken(), note=f"with {key}")
    event = json.loads(lines(stream)[-1])
    assert event["obj"] == "<Broken with a failing __str__>"
    assert event["note"] == "with ***"


def test_a_failed_log_write_is_reported_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    """When the stream cannot be written, stderr gets one scrubbed line naming the event, never the
    stdlib's dump of the record's raw message and arguments."""
    key = secret_value()
    secrets.register(key)
    stream = configure("json")
    stream.close()
    log.warning("t.unwritable", detail=f"key {key}")
    err = capsys.readouterr().err
    assert "bridge: a log record (t.unwritable) could not be written: ValueError" in err
    assert key not in err and len(err.splitlines()) == 1


# ---- encoded forms, short secrets, cuts ------------------------------------------------------------


def encoded_key(quotes: str = "'\"") -> str:
    # Characters that every encoding changes: / + = quotes, backslash, space.
    return f"kR/{uuid.uuid4().hex[:12]}+Q={quotes}x\\ {uuid.uuid4().hex[:8]}=="


@pytest.mark.parametrize(
    "encode",
    [
        lambda k: quote(k, safe=""),
        lambda k: quote(k),
        quote_plus,
        lambda k: json.dumps({"key": k}),
        lambda k: json.dumps(k).replace("/", "\\/"),  # JSON from servers that escape slashes
        lambda k: json.dumps(k + "é", ensure_ascii=False),
        lambda k: repr([k]),
        lambda k: repr(f'key "{k}"'),  # a text quoting it: repr picks its quotes for the whole text
        lambda k: f"Holder(key={k!r})",
        lambda k: repr(k.encode()),
    ],
)
@pytest.mark.parametrize("quotes", ["'\"", "'", '"'])
def test_escaped_and_encoded_forms_are_scrubbed(encode: Callable[[str], str], quotes: str) -> None:
    """A secret written percent-encoded (path, query, form), JSON-escaped (slashes too) or
    repr-escaped (either quote style, str or bytes) is scrubbed like the plain one, whichever quotes
    it holds."""
    key = encoded_key(quotes)
    secrets.register(key)
    text = f"request failed: {encode(key)} (retrying)"
    out = secrets.scrub(text)
    assert out != text and not leaked(out, key)
    assert out.startswith("request failed: ") and out.endswith(" (retrying)")


@pytest.mark.parametrize("prefix", [b"", b"u:", b"ab:", b"abc:", b"user:"])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_forms_are_scrubbed(prefix: bytes, urlsafe: bool) -> None:
    """A secret inside base64 (an HTTP Basic header: `user:key`), at any byte alignment, standard or
    URL-safe alphabet: at most the two characters that also depend on the neighbouring bytes are left
    on each side, never enough to decode any of it."""
    key = encoded_key()
    secrets.register(key)
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    blob = encode(prefix + key.encode() + b"!").decode()
    out = secrets.scrub(f"Authorization: Basic {blob}")
    assert out.count(secrets.REDACTED) == 1
    left = len(out.removeprefix("Authorization: Basic ")) - len(secrets.REDACTED)
    secret_chars = len(key.encode()) * 4 // 3
    assert left <= len(blob) - secret_chars + 2


def test_a_secret_as_a_log_field_in_a_header_dict() -> None:
    """Through the pipeline: a logged request's Basic header (base64 of `user:key`) is scrubbed."""
    key = encoded_key()
    secrets.register(key)
    stream = configure("json")
    header = "Basic " + base64.b64encode(f"bot:{key}".encode()).decode()
    log.info("t.request", headers={"Authorization": header})
    sent = json.loads(lines(stream)[-1])["headers"]["Authorization"]
    assert sent.startswith("Basic ") and secrets.REDACTED in sent
    assert key.encode() not in base64.b64decode(sent.removeprefix("Basic ").replace("***", "") + "===")


def test_short_secrets_never_print_themselves_but_are_not_scrubbed_from_text() -> None:
    """Decision: a secret shorter than MIN_CHARS is accepted (placeholders such as `api_key: k` in
    paper configs) and a Secret never shows it, but it is not scrubbed from free text: removing every
    `k` from every line would wreck the logs, and no real credential is that short."""
    short = "k" * (secrets.MIN_CHARS - 1)
    wrapped = secrets.Secret(short)
    assert (repr(wrapped), str(wrapped), f"{wrapped}") == ("Secret('***')", "***", "***")
    assert secrets.scrub(f"token {short}") == f"token {short}"
    long_enough = "q" * secrets.MIN_CHARS
    secrets.Secret(long_enough)
    assert secrets.scrub(f"token {long_enough}") == "token ***"


@pytest.mark.parametrize("marker", ["...", "…"])
def test_a_secret_cut_before_scrubbing_is_still_scrubbed(marker: str) -> None:
    """Text that was shortened before it was scrubbed (a config error quoting `"sk-...`): the
    secret's leading characters right before the cut marker are scrubbed, down to CUT_PREFIX_CHARS."""
    key = secret_value()
    secrets.register(key)
    for keep in range(secrets.CUT_PREFIX_CHARS, len(key)):
        out = secrets.scrub(f'expected a number, got "{key[:keep]}{marker}')
        assert out == f'expected a number, got "***{marker}', keep


def test_clip_scrubs_then_cuts() -> None:
    """clip() at every length through a secret: never a prefix of it (of CUT_PREFIX_CHARS or more),
    never longer than the limit."""
    key = secret_value()
    secrets.register(key)
    text = "=" * 20 + key + "=" * 20
    for limit in range(1, len(text) + 1):
        out = secrets.clip(text, limit)
        assert len(out) <= limit and key[: secrets.CUT_PREFIX_CHARS] not in out, limit


# ---- warnings and tracebacks ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_warnings_and_tracebacks_are_scrubbed(fmt: str) -> None:
    """A warnings.warn() and a logged traceback quoting the secret (in the message, its chained cause
    and a note) are written scrubbed."""
    key = secret_value()
    secrets.register(key)
    stream = configure(fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # pytest records warnings by swapping warnings.showwarning; put the logging hook that
        # configure() installs back in place for this block, as it is outside pytest.
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        warnings.warn(f"deprecated call with {key}", UserWarning, stacklevel=1)
    try:
        try:
            raise KeyError(key)
        except KeyError as cause:
            error = ValueError(f"refused {key}")
            error.add_note(f"while signing with {key}")
            raise error from cause
    except ValueError:
        log.exception("t.failed")
    text = stream.getvalue()
    assert "deprecated call with ***" in text and "refused ***" in text and "while signing with ***" in text
    assert not leaked(text, key), text


def test_uncaught_exceptions_are_logged_scrubbed() -> None:
    """An exception nobody catches, in a thread or the main thread, is logged through the pipeline
    (thread.crashed, process.uncaught) instead of printed raw by the interpreter."""
    script = textwrap.dedent(
        """
        import sys, threading
        from bridge import secrets
        from bridge.ops import logs

        key = sys.argv[1]
        logs.configure("info", "json", stream=sys.stdout)
        secrets.register(key)

        def work():
            raise RuntimeError("thread saw " + key)

        worker = threading.Thread(target=work, name="worker")
        worker.start()
        worker.join()
        raise RuntimeError("main saw " + key)
        """
    )
    key = secret_value()
    done = subprocess.run(
        [sys.executable, "-c", script, key], capture_output=True, text=True, timeout=20, cwd=ROOT
    )
    assert done.returncode == 1
    assert done.stderr == ""
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["event"], e["level"]) for e in events] == [
        ("thread.crashed", "error"),
        ("process.uncaught", "critical"),
    ]
    assert events[0]["thread"] == "worker"
    assert "thread saw ***" in done.stdout and "main saw ***" in done.stdout and key not in done.stdout


# ---- what the CLI prints --------------------------------------------------------------------------


def leaky_plugin(tmp_path: Path, kind: str) -> Path:
    plugin = tmp_path / f"leaky_{kind}.py"
    body = {
        "import": "import os\nraise RuntimeError('bad token ' + os.environ['LEAK_KEY'])\n",
        "constructor": (
            "from bridge import Strategy\n"
            "class Leaky(Strategy):\n"
            "    def __init__(self, name, params):\n"
            "        raise ValueError('cannot use ' + params['token'])\n"
        ),
        "params": (
            "from dataclasses import dataclass\n"
            "from bridge import Strategy\n"
            "class Leaky(Strategy):\n"
            "    @dataclass(frozen=True)\n"
            "    class Params:\n"
            "        token: float\n"
        ),
    }[kind]
    plugin.write_text(body)
    return plugin


def leaky_config(tmp_path: Path, plugin: Path, key_file: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"""
feed: {{url: "ws://127.0.0.1:1", api_key: "${{LEAK_KEY}}"}}
state_dir: {tmp_path / "state"}
log: {{format: json}}
strategies: [{{name: l, module: {plugin}, params: {{token: "${{file:{key_file}}}"}}}}]
"""
    )
    return cfg


# A secret short enough to be quoted whole, and one long enough (a webhook URL) that the config error
# cuts it to 57 characters before anything scrubs it.
KEY_SHAPES = {
    "short": lambda: secret_value(),
    "long": lambda: f"https://hooks.example.com/{uuid.uuid4().hex * 2}",
}


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(
    ("kind", "shape"),
    [("import", "short"), ("constructor", "short"), ("params", "short"), ("params", "long")],
)
def test_plugin_errors_are_printed_and_logged_scrubbed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    kind: str,
    shape: str,
) -> None:
    """A plugin whose import, constructor or Params validation fails quoting a secret the config gave
    it: `run` and `check-config` exit 78 with one scrubbed line (and `run`'s daemon.fatal log line is
    scrubbed), nothing of the secret in either stream, not even the part a cut left."""
    key = KEY_SHAPES[shape]()
    monkeypatch.setenv("LEAK_KEY", key)
    (tmp_path / "token").write_text(key)
    cfg = leaky_config(tmp_path, leaky_plugin(tmp_path, kind), tmp_path / "token")
    assert cli.main([command, "-c", str(cfg)]) == 78
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and err.startswith("bridge: ") and "strategies[l]" in err
    assert "***" in err
    assert key[:12] not in out + err
    if command == "run":
        fatal = [json.loads(line) for line in out.splitlines() if '"daemon.fatal"' in line]
        assert len(fatal) == 1 and "***" in fatal[0]["error"]


def test_show_config_and_list_strategies_scrub_a_secret_param(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret handed to a strategy param (a key not named like a secret): show-config and
    list-strategies print it as ***."""
    key = secret_value()
    monkeypatch.setenv("LEAK_KEY", key)
    (tmp_path / "token").write_text(key)
    plugin = tmp_path / "plain.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from bridge import Strategy\n"
        "class Plain(Strategy):\n"
        "    @dataclass(frozen=True)\n"
        "    class Params:\n"
        "        hook: str\n"
    )
    cfg = leaky_config(tmp_path, plugin, tmp_path / "token")
    cfg.write_text(cfg.read_text().replace("token:", "hook:"))
    assert cli.main(["show-config", "-c", str(cfg)]) == 0
    assert cli.main(["list-strategies", "-c", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert "hook: '***'" in out and "Params(hook='***')" in out
    assert key not in out + err


async def test_a_daemon_answer_is_printed_scrubbed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bridge close` prints the daemon's answer (which may quote an exchange's error) scrubbed."""
    key = secret_value()
    monkeypatch.setenv("LEAK_KEY", key)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f'feed: {{url: "ws://127.0.0.1:1", api_key: "${{LEAK_KEY}}"}}\nstate_dir: {tmp_path / "state"}\n'
    )

    async def refuse(_: dict[str, object]) -> dict[str, object]:
        return {"ok": False, "error": f"exchange said: invalid key {key}"}

    server = ControlServer(socket_path(tmp_path / "state", dry_run=True), {"close": refuse})
    await server.start()
    try:
        code = await asyncio.to_thread(cli.main, ["close", "ABC/USDT", "-c", str(cfg)])
    finally:
        await server.stop()
    out, err = capsys.readouterr()
    assert (code, out, err) == (1, "", "bridge: exchange said: invalid key ***\n")


def test_an_unexpected_error_is_one_scrubbed_line_and_a_scrubbed_logged_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (not a BridgeError) in a command: exit 1, one scrubbed line on stderr, and the traceback
    in the log, scrubbed; never the interpreter's raw traceback."""
    key = secret_value()
    secrets.register(key)

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError(f"parser blew up near {key}")

    monkeypatch.setattr(config_mod, "load", broken)
    assert cli.main(["show-config", "-c", str(tmp_path / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert "bridge: unexpected error: RuntimeError: parser blew up near *** (traceback in the log)" in err
    assert '"cli.crashed"' in err and "Traceback" not in err and key not in err


# ---- alerts -----------------------------------------------------------------------------------------


async def test_alert_fields_of_every_type_are_scrubbed_and_cut_after(
    endpoints: Callable[[], Awaitable[Endpoint]],
) -> None:
    """An alert whose fields hold the secret as bytes, a set, an exception or an object's repr, and
    whose text is long enough that Telegram's cut falls inside the secret: the webhook body and the
    Telegram message carry neither the secret nor a prefix of it."""
    key = secret_value()
    secrets.register(key)
    hook, tg = await endpoints(), await endpoints()
    notifier = Notifier(AlertsConfig(webhook=webhook(hook), telegram=telegram(tg.url)))
    straddle = "=" * (TELEGRAM_MAX_TEXT - 10) + key
    notifier.notify(
        "trading_halted",
        straddle,
        raw=key.encode(),
        tags={key},
        error=RuntimeError(f"bad {key}"),
        obj=Holder(key),
    )
    await asyncio.wait_for(notifier.close(), WAIT)
    body = hook.received[0].body
    assert body["fields"] == {"raw": "***", "tags": ["***"], "error": "bad ***", "obj": "Holder(key='***')"}
    sent = tg.received[0].body["text"]
    assert len(sent) <= TELEGRAM_MAX_TEXT
    for text in (json.dumps(body), sent):
        assert key[: secrets.CUT_PREFIX_CHARS] not in text


def test_a_config_error_quoting_a_long_value_scrubs_before_cutting() -> None:
    """A config error shows the bad value cut to 60 characters: the secret inside it, even where the
    cut would run through it, never appears, not even its first characters."""
    from bridge import schema

    key = secret_value()
    secrets.register(key)
    shown = schema.describe("x" * 40 + key + "y" * 40)
    assert key not in shown and key[:8] not in shown
    assert "***" in shown and len(shown) <= 60
