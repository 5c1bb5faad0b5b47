"""The console: the README's first experience, run exactly as a user would, as real ``crmbot`` processes.

Each test works in its own temporary directory, so the default SQLite file lands there and not in the repository.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.test_wecom_callback import PUSH_BODY, PUSH_QUERY, VERIFY

VENV_SCRIPT = Path(sys.executable).with_name("crmbot")
CRMBOT = [str(VENV_SCRIPT)] if VENV_SCRIPT.exists() else [sys.executable, "-m", "bot.cli"]
TIMEOUT = 180  # a hang must fail the test, not the suite


def crmbot(cwd: Path, *args: str, stdin: str = "", command: list[str] = CRMBOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRMBOT_")}
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**env, "PYTHONIOENCODING": "utf-8"},
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The working directory of the commands (apart from the test database's own directory)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    path = tmp_path / "test.toml"
    path.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    return path


def assert_help_then_huawei(out: str) -> None:
    assert "我是您的 CRM 助手" in out, out
    assert "「客户 华为」" in out  # the help lists what to type
    card = out.index("【华为技术有限公司】")
    assert out.index("我是您的 CRM 助手") < card  # replies come in the order of the lines typed
    assert "负责人：张三" in out[card:] and "阶段：谈判" in out[card:] and "联系人：刘工" in out[card:]


def test_the_readme_first_run_with_built_in_defaults(workdir: Path) -> None:
    demo = crmbot(workdir, "demo")
    assert demo.returncode == 0, demo.stderr
    assert "演示数据已就绪" in demo.stdout and "staff=6" in demo.stdout and "customers=5" in demo.stdout
    assert (workdir / "crmbot.sqlite3").exists()  # the default database is a file in the working directory

    chat = crmbot(workdir, "chat", "--as", "zhangsan", stdin="帮助\n客户 华为\n")
    assert chat.returncode == 0, chat.stderr
    assert_help_then_huawei(chat.stdout)
    assert "您好" not in chat.stdout  # no interactive greeting or prompt when piped


def test_demo_and_chat_on_the_configured_database(workdir: Path, config: Path) -> None:
    for _ in range(2):  # demo is idempotent
        demo = crmbot(workdir, "demo", "--config", str(config))
        assert demo.returncode == 0, demo.stderr
        assert "staff=6" in demo.stdout and "customers=5" in demo.stdout

    chat = crmbot(workdir, "chat", "--as", "张三", "--config", str(config), stdin="帮助\n\n客户 华为\n")
    assert chat.returncode == 0, chat.stderr
    assert_help_then_huawei(chat.stdout)


def test_an_unknown_staff_member_exits_2(workdir: Path, config: Path) -> None:
    assert crmbot(workdir, "demo", "--config", str(config)).returncode == 0
    chat = crmbot(workdir, "chat", "--as", "nobody", "--config", str(config), stdin="帮助\n")

    assert chat.returncode == 2
    assert chat.stdout == ""
    lines = chat.stderr.strip().splitlines()
    assert len(lines) == 1 and "nobody" in lines[0] and "zhangsan" not in lines[0], chat.stderr
    assert "张三" in lines[0]  # it says who is known


def test_chat_before_any_staff_exists_says_what_to_do(workdir: Path, config: Path) -> None:
    chat = crmbot(workdir, "chat", "--config", str(config), stdin="帮助\n")
    assert chat.returncode == 2
    assert "crmbot demo" in chat.stderr and len(chat.stderr.strip().splitlines()) == 1


def test_parse_prints_one_json_line_per_text(workdir: Path, config: Path) -> None:
    result = crmbot(
        workdir, "parse", "帮助", "--json", "--config", str(config), command=[sys.executable, "-m", "bot.cli"]
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {"text": "帮助", "intent": "help", "slots": {}}
    assert not (workdir / "crmbot.sqlite3").exists()  # --config was honoured


def test_serve_answers_the_official_wecom_vectors(workdir: Path, tmp_path: Path, database_url: str) -> None:
    """`crmbot serve` as deployed (its own event loop, the real database): Tencent's sample requests (PROTOCOLS.md
    §1 vector B) are answered, a retry is recognised and a forged signature refused, as /metrics then shows; the
    access log has the refused request only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[database]\nurl = "{database_url}"\n'
        '[wecom]\ncorp_id = "ww1436e0e65a779aee"\nagent_id = 1000002\nsecret = "s"\n'
        'token = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"\nencoding_aes_key = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"\n'
        'api_base = "http://127.0.0.1:9"\n'
        "callback_window_seconds = 400000000\n",  # the vectors were signed in 2016
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CRMBOT_")}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen([*CRMBOT, "serve", "--config", str(config)], cwd=workdir, env=env, stderr=out)
    base = f"http://127.0.0.1:{port}"

    def call(path: str, query: dict[str, str], body: str | None = None) -> tuple[int, str]:
        url = f"{base}{path}?{urllib.parse.urlencode(query)}"
        data = body.encode() if body is not None else None
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    try:
        for _ in range(300):
            try:
                if call("/healthz", {})[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert call("/wecom/callback", VERIFY) == (200, "1288432023552776189")
        assert call("/wecom/callback", PUSH_QUERY, PUSH_BODY) == (200, "")
        assert call("/wecom/callback", PUSH_QUERY, PUSH_BODY) == (200, "")  # WeCom's retry
        assert call("/wecom/callback", {**PUSH_QUERY, "msg_signature": "f" * 40}, PUSH_BODY)[0] == 403
        metrics = call("/metrics", {})[1]
        assert 'crmbot_callbacks_total{platform="wecom",result="ok"} 1.0' in metrics
        assert 'crmbot_callbacks_total{platform="wecom",result="duplicate"} 1.0' in metrics
        assert 'crmbot_callbacks_total{platform="wecom",result="403"} 1.0' in metrics
    finally:
        server.send_signal(2)  # SIGINT, as Ctrl-C: a clean shutdown
        assert server.wait(timeout=60) == 0
    # The access log ([server] access_log = "errors", the default) has the refused request, not the answered ones.
    accessed = [line for line in log.read_text(encoding="utf-8").splitlines() if "aiohttp.access" in line]
    assert len(accessed) == 1 and '" 403 ' in accessed[0]
