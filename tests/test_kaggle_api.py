"""pipeline.competition.kaggle_api against the real kaggle client, talking to the stand-in server in kaggle_stub.

The client reads its environment when it is imported, so each case runs it in a subprocess that
calls pipeline.competition.kaggle_api the way the CLI does: print `error: <message>` and exit 1 on PipelineError.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from kaggle_stub import (
    FAKE_KEY,
    FAKE_TOKEN,
    FAKE_USERNAME,
    RULES_MESSAGE,
    SUBMIT_MESSAGE,
    KaggleStub,
    isolated_env,
    notebook_env,
    proxy_env,
    write_kaggle_json,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMPETITION = "digit-recognizer"
SUBPROCESS_TIMEOUT_S = 120  # a client that hangs fails the test instead of blocking it

# Mimics the CLI: the result on stdout, or one `error:` line on stderr and exit status 1.
CLI_PRELUDE = """
import sys
from pathlib import Path
from pipeline.core.errors import PipelineError
from pipeline.competition import kaggle_api
"""

DOWNLOAD_CODE = CLI_PRELUDE + """
try:
    saved = kaggle_api.download_competition(sys.argv[1], Path(sys.argv[2]), force=sys.argv[3] == "force", quiet=True)
except PipelineError as error:
    print("error:", error, file=sys.stderr)
    sys.exit(1)
print("saved:", saved)
"""

SUBMIT_CODE = CLI_PRELUDE + """
try:
    answer = kaggle_api.submit_file(sys.argv[1], Path(sys.argv[2]), sys.argv[3], quiet=True)
except PipelineError as error:
    print("error:", error, file=sys.stderr)
    sys.exit(1)
print("answer:", answer["message"], "ref:", answer["ref"])
"""

FIND_CREDENTIALS_CODE = """
import json, sys
from pipeline.competition.credentials import credential_warnings, find_credentials
print(json.dumps({
    "source": find_credentials(),
    "warnings": credential_warnings(),
    "kaggle_imported": any(name == "kaggle" or name.startswith("kaggle.") for name in sys.modules),
}))
"""

# The client waits 2, 4, ... 32 s between its 5 download retries; the test needs the retries, not the waits.
NO_RETRY_WAITS = "import time\ntime.sleep = lambda seconds: None\n"


def run_python(code: str, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )


def run_download(env: dict, dest_dir: Path, force: bool = False, prelude: str = "") -> subprocess.CompletedProcess:
    return run_python(prelude + DOWNLOAD_CODE, env, COMPETITION, dest_dir, "force" if force else "no-force")


def assert_clean_failure(result: subprocess.CompletedProcess) -> str:
    """Exit 1 with a single `error:` line, no traceback, no secret; returns the message."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert FAKE_KEY not in output and FAKE_TOKEN not in output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    return error_lines[0]


def credentials_env(tmp_path: Path) -> dict:
    """An environment with no credentials and a temporary HOME and KAGGLE_CONFIG_DIR."""
    home, config_dir = tmp_path / "home", tmp_path / "config"
    home.mkdir(exist_ok=True)
    config_dir.mkdir(exist_ok=True)
    return isolated_env(home, config_dir)


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


# ---- Download ----


def test_download_saves_the_served_zip(tmp_path):
    dest_dir = tmp_path / "raw"
    with KaggleStub() as stub:
        result = run_download(stub.client_env(tmp_path), dest_dir)

    assert result.returncode == 0, result.stdout + result.stderr
    saved = dest_dir / f"{COMPETITION}.zip"
    assert f"saved: {saved}" in result.stdout
    assert saved.read_bytes() == stub.archive.read_bytes()
    assert sorted(path.name for path in dest_dir.iterdir()) == [saved.name]  # no temporary folder left
    assert stub.competition_names == [COMPETITION]
    assert stub.paths[0] == "/api/v1/competitions.CompetitionApiService/DownloadDataFiles"
    assert stub.auth_headers == [stub.basic_auth]
    assert FAKE_KEY not in result.stdout + result.stderr


def test_download_with_access_token_sends_bearer_auth(tmp_path):
    with KaggleStub() as stub:
        result = run_download(stub.client_env(tmp_path, credentials="token"), tmp_path / "raw")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "raw" / f"{COMPETITION}.zip").read_bytes() == stub.archive.read_bytes()
    assert set(stub.auth_headers) == {f"Bearer {FAKE_TOKEN}"}
    # The client checked the token once, at import; that authenticated api was reused, not built again.
    assert [name for name, _ in stub.api_calls].count("IntrospectToken") == 1


def test_download_in_a_kaggle_notebook_uses_the_notebooks_token(tmp_path):
    with KaggleStub() as stub:
        result = run_download(stub.client_env(tmp_path, credentials="notebook"), tmp_path / "raw")

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "raw" / f"{COMPETITION}.zip").read_bytes() == stub.archive.read_bytes()
    assert set(stub.auth_headers) == {f"Bearer {FAKE_TOKEN}"}
    assert FAKE_TOKEN not in result.stdout + result.stderr


def test_download_skips_an_up_to_date_zip_unless_forced(tmp_path):
    dest_dir = tmp_path / "raw"
    saved = dest_dir / f"{COMPETITION}.zip"
    with KaggleStub() as stub:
        env = stub.client_env(tmp_path)
        assert run_download(env, dest_dir).returncode == 0
        first_bytes = saved.read_bytes()
        # A smaller zip with the same Last-Modified: the client keeps the local copy...
        stub.archive = make_zip(tmp_path / "newer.zip", {"train.csv": "label\n1\n", "test.csv": "pixel0\n0\n"})
        skipped = run_download(env, dest_dir)
        assert skipped.returncode == 0, skipped.stdout + skipped.stderr
        assert saved.read_bytes() == first_bytes
        # ...unless forced.
        forced = run_download(env, dest_dir, force=True)

    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert saved.read_bytes() == stub.archive.read_bytes()
    assert sorted(path.name for path in dest_dir.iterdir()) == [saved.name]


def test_download_dropped_midway_fails_and_leaves_no_zip(tmp_path):
    dest_dir = tmp_path / "raw"
    with KaggleStub(mode="drop") as stub:
        result = run_download(stub.client_env(tmp_path), dest_dir, prelude=NO_RETRY_WAITS)

    message = assert_clean_failure(result)
    assert "connection to Kaggle dropped" in message and "run the command again" in message
    assert stub.downloads_started == 6  # the client tried once and retried 5 times
    assert list(dest_dir.iterdir()) == []  # neither the zip nor the temporary folder


def test_a_download_dropped_once_is_resumed_where_it_stopped_and_completes(tmp_path):
    """README, Network: "a dropped one resumed 5 times": the client asks for the bytes it lacks, and the zip kept is
    the whole one (review 58 J: only downloads that always dropped were tested)."""
    dest_dir = tmp_path / "raw"
    with KaggleStub(mode="drop-once") as stub:
        # Larger than the client's 1 MB chunks, so the dropped half leaves some of them on disk (the full zip: 16 MB)
        stub.archive = make_zip(tmp_path / "large.zip", {"train.csv": "label\n1\n", "test.csv": "pixel0\n0\n",
                                                         "padding.txt": os.urandom(3_000_000).hex()})
        result = run_download(stub.client_env(tmp_path), dest_dir, prelude=NO_RETRY_WAITS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (dest_dir / "digit-recognizer.zip").read_bytes() == stub.archive.read_bytes()
    ranges = [request["range"] for request in stub.requests if request["method"] == "GET"]
    size = stub.archive.stat().st_size
    assert len(ranges) == 2 and ranges[0] is None and 0 < int(ranges[1].split("=")[1].rstrip("-")) < size, ranges
    assert sorted(path.name for path in dest_dir.iterdir()) == ["digit-recognizer.zip"]


def test_a_dropped_download_through_the_cli_says_only_what_is_true(tmp_path):
    """The client printed `Partial file saved at: .../.tmp-download-.../digit-recognizer.zip` and `You can resume by
    running the same command again` just before the pipeline's `nothing was kept, run the command again`."""
    code = NO_RETRY_WAITS + textwrap.dedent("""
        import runpy, sys
        sys.argv = ["digit-recognizer", "download", "--source", "kaggle"]
        runpy.run_module("pipeline", run_name="__main__")
    """)
    with KaggleStub(mode="drop") as stub:
        result = run_python(code, {**stub.client_env(tmp_path), "PIPELINE_ROOT": str(tmp_path / "project")})
    message = assert_clean_failure(result)
    assert "nothing was kept, run the command again" in message
    assert "Partial file saved" not in result.stdout + result.stderr and "resume" not in result.stdout, result.stdout
    # The client's retries stay (they were hidden with the rest): a slow link shows that it is still trying
    retries = [line for line in result.stdout.splitlines() if line.startswith("download: Retrying in ")]
    assert len(retries) == 5 and retries[-1].endswith("(attempt 5/5)"), result.stdout


def run_with_one_second_timeout(mode: str, tmp_path: Path, code: str, *args) -> tuple[KaggleStub, str, float]:
    """Run code against a stub in `mode` with PIPELINE_NETWORK_TIMEOUT=1; (stub, error line, seconds)."""
    with KaggleStub(mode=mode) as stub:
        env = {**stub.client_env(tmp_path), "PIPELINE_NETWORK_TIMEOUT": "1"}
        started = time.monotonic()
        result = run_python(code, env, *args)
        elapsed = time.monotonic() - started
    return stub, assert_clean_failure(result), elapsed


def test_silent_server_ends_each_attempt_after_the_timeout_and_retries_a_bounded_number_of_times(tmp_path):
    """Issue 9: a server that accepts and never answers hung the download for ever."""
    dest_dir = tmp_path / "raw"
    stub, message, elapsed = run_with_one_second_timeout("silent", tmp_path, DOWNLOAD_CODE, COMPETITION, dest_dir,
                                                         "no-force")
    assert "Kaggle sent nothing for 1 s, 3 times" in message and "PIPELINE_NETWORK_TIMEOUT" in message
    assert [name for name, _ in stub.api_calls] == ["DownloadDataFiles"] * 3
    # Three 1 s timeouts and the back-off between them (2 s, 4 s), which the 5 s deadline does not count.
    assert 3 + 6 <= elapsed < 30, f"took {elapsed:.0f} s"
    assert list(dest_dir.iterdir()) == []


def test_retries_back_off_exponentially_and_only_for_network_failures(monkeypatch):
    import requests

    from pipeline.competition import kaggle_api
    from pipeline.core.errors import PipelineError

    waits = []
    monkeypatch.setattr("time.sleep", waits.append)
    failures = [requests.ConnectionError("refused"), requests.Timeout("stalled"), requests.ConnectionError("reset")]

    def flaky():
        if failures:
            raise failures.pop(0)
        return "done"

    assert kaggle_api._call_client(flaky, COMPETITION, attempts=4) == "done"
    assert waits == [2.0, 4.0, 8.0]  # doubled each time

    waits.clear()
    failures[:] = [requests.ConnectionError("refused")] * 3
    with pytest.raises(PipelineError, match="cannot reach Kaggle"):
        kaggle_api._call_client(flaky, COMPETITION, attempts=3)
    assert waits == [2.0, 4.0]  # no pause after the last try

    waits.clear()
    failures[:] = [ValueError("not a network failure")]
    with pytest.raises(PipelineError):
        kaggle_api._call_client(flaky, COMPETITION, attempts=3)
    assert waits == []


def test_trickling_server_is_given_up_on_after_the_deadline(tmp_path):
    """One byte every 0.2 s never trips a 1 s read timeout: the whole call has a deadline (5 timeouts)."""
    dest_dir = tmp_path / "raw"
    stub, message, elapsed = run_with_one_second_timeout("trickle", tmp_path, DOWNLOAD_CODE, COMPETITION, dest_dir,
                                                         "no-force")
    assert "gave up on the download of digit-recognizer after 5 s" in message and "PIPELINE_NETWORK_TIMEOUT" in message
    assert stub.downloads_started >= 1
    assert 4 < elapsed < 30, f"took {elapsed:.0f} s"
    assert list(dest_dir.iterdir()) == []


def test_silent_server_during_submit_is_not_retried_and_says_to_check_first(tmp_path):
    csv_path = tmp_path / "submission.csv"
    csv_path.write_bytes(b"ImageId,Label\n1,2\n")
    stub, message, elapsed = run_with_one_second_timeout("silent", tmp_path, SUBMIT_CODE, COMPETITION, csv_path,
                                                         "a message")
    assert "Kaggle sent nothing for 1 s, 1 time " in message
    assert "kaggle.com/competitions/digit-recognizer/submissions before sending it again" in message
    assert [name for name, _ in stub.api_calls] == ["StartSubmissionUpload"]
    assert elapsed < 30


def test_bad_network_timeout_setting_is_one_line(tmp_path):
    with KaggleStub() as stub:
        env = {**stub.client_env(tmp_path), "PIPELINE_NETWORK_TIMEOUT": "soon"}
        result = run_download(env, tmp_path / "raw")
    assert "PIPELINE_NETWORK_TIMEOUT=soon: expected a number of seconds" in assert_clean_failure(result)
    assert stub.api_calls == []


def test_download_served_a_corrupt_zip_is_refused(tmp_path):
    dest_dir = tmp_path / "raw"
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 100)
    with KaggleStub(archive=corrupt) as stub:
        result = run_download(stub.client_env(tmp_path), dest_dir)

    message = assert_clean_failure(result)
    assert "not a complete zip" in message
    assert list(dest_dir.iterdir()) == []


# ---- Submit ----


def test_submit_sends_the_file_and_message(tmp_path):
    csv_path = tmp_path / "submission.csv"
    csv_path.write_bytes(b"ImageId,Label\n1,2\n2,0\n3,9\n")
    with KaggleStub() as stub:
        result = run_python(SUBMIT_CODE, stub.client_env(tmp_path), COMPETITION, csv_path, "run 42: cnn, 30 epochs")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"answer: {SUBMIT_MESSAGE}" in result.stdout
    assert stub.submitted_files == [csv_path.read_bytes()]
    assert stub.submission_descriptions == ["run 42: cnn, 30 epochs"]
    assert stub.competition_names == [COMPETITION, COMPETITION]  # StartSubmissionUpload, CreateSubmission


def test_submit_failed_upload_is_an_error(tmp_path):
    csv_path = tmp_path / "submission.csv"
    csv_path.write_text("ImageId,Label\n1,2\n")
    with KaggleStub(mode="upload-fails") as stub:
        result = run_python(SUBMIT_CODE, stub.client_env(tmp_path), COMPETITION, csv_path, "message")

    message = assert_clean_failure(result)
    assert "upload" in message and "Could not submit to competition" in message
    assert stub.submissions == []


def test_submit_rules_not_accepted(tmp_path):
    csv_path = tmp_path / "submission.csv"
    csv_path.write_text("ImageId,Label\n1,2\n")
    with KaggleStub(mode="rules") as stub:
        result = run_python(SUBMIT_CODE, stub.client_env(tmp_path), COMPETITION, csv_path, "message")

    message = assert_clean_failure(result)
    assert f"https://www.kaggle.com/competitions/{COMPETITION}/rules" in message


# ---- Failures ----


def test_no_credentials_gives_one_line_and_hides_the_client_help(tmp_path):
    with KaggleStub() as stub:
        result = run_download(stub.client_env(tmp_path, credentials=None), tmp_path / "raw")

    message = assert_clean_failure(result)
    assert "no Kaggle credentials found" in message
    assert "https://www.kaggle.com/settings" in message and "chmod 600" in message and "KAGGLE_KEY" in message
    assert "Authentication required" not in result.stdout + result.stderr  # the client's own help text
    assert stub.requests == []


@pytest.mark.parametrize("case", ["stale token in KAGGLE_API_TOKEN", "stale token file", "KAGGLE_CONFIG_DIR",
                                  "username without key", "key without username", "wrong KAGGLE_USERNAME/KAGGLE_KEY"])
def test_the_advice_about_credentials_names_the_ones_in_use(tmp_path, case):
    """The advice was always to put a kaggle.json in ~/.kaggle/: beside a stale access token (tried first) that fixed
    nothing, nor with KAGGLE_CONFIG_DIR set (the client reads only that folder)."""
    with KaggleStub() as stub:
        credentials = "kaggle.json" if case == "stale token in KAGGLE_API_TOKEN" else None
        env = stub.client_env(tmp_path, credentials=credentials)
        token_file = Path(env["HOME"]) / ".kaggle" / "access_token"
        if case == "stale token in KAGGLE_API_TOKEN":
            env["KAGGLE_API_TOKEN"] = "KGAT_expired-0000"
        elif case == "stale token file":
            token_file.parent.mkdir(parents=True)
            token_file.write_text("KGAT_expired-0000")
        elif case == "username without key":
            env["KAGGLE_USERNAME"] = "me"
        elif case == "key without username":
            env["KAGGLE_KEY"] = "abc"
        elif case == "wrong KAGGLE_USERNAME/KAGGLE_KEY":
            env.update(KAGGLE_USERNAME="me", KAGGLE_KEY="wrong")  # Kaggle answers 401
        result = run_download(env, tmp_path / "raw")
    message = assert_clean_failure(result)
    config_dir = env["KAGGLE_CONFIG_DIR"]
    expected = {
        "stale token in KAGGLE_API_TOKEN": "and set KAGGLE_API_TOKEN to it, or unset KAGGLE_API_TOKEN to use a"
                                           " kaggle.json",
        "stale token file": f"and replace {token_file} with it, or delete {token_file} to use a kaggle.json",
        "KAGGLE_CONFIG_DIR": f"put the kaggle.json it downloads in {config_dir}/ and run chmod 600"
                             f" {config_dir}/kaggle.json",
        "username without key": "KAGGLE_USERNAME is set without KAGGLE_KEY: set KAGGLE_KEY too",
        "key without username": "KAGGLE_KEY is set without KAGGLE_USERNAME: set KAGGLE_USERNAME too",
        "wrong KAGGLE_USERNAME/KAGGLE_KEY": "and set KAGGLE_USERNAME and KAGGLE_KEY to the username and key in the"
                                            " kaggle.json it downloads, or unset both to use a kaggle.json in"
                                            f" {config_dir}/",
    }[case]
    assert expected in message, message
    assert "~/.kaggle" not in message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the client's ~/.config/kaggle is Linux's")
def test_a_kaggle_json_the_old_advice_put_in_config_is_named_once_kaggle_s_folder_hides_it(tmp_path, monkeypatch):
    """Review 58 R: a kaggle.json in ~/.config/kaggle/ (where the advice said until this stop) was ignored without a
    word once ~/.kaggle/ existed: the sample was used instead."""
    from pipeline.competition.credentials import credential_warnings

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    hidden = tmp_path / ".config" / "kaggle" / "kaggle.json"
    hidden.parent.mkdir(parents=True)
    hidden.write_text('{"username": "u", "key": "k"}')
    hidden.chmod(0o600)
    assert credential_warnings() == []  # read: ~/.kaggle does not exist
    (tmp_path / ".kaggle").mkdir()
    assert credential_warnings() == [f"{hidden} is ignored: the kaggle client reads {tmp_path / '.kaggle'}/ since that"
                                     f" folder exists; move it there (mv {hidden} {tmp_path / '.kaggle'}/)"]


def test_without_credentials_the_advice_is_the_readme_s_folder_which_the_client_reads_first(tmp_path, monkeypatch):
    """Review 58 K: the advice named ~/.config/kaggle (the client's folder while ~/.kaggle is missing), the README
    ~/.kaggle; a kaggle.json put where the advice said was ignored once a ~/.kaggle folder was made."""
    from pipeline.competition.kaggle_api import how_to_configure

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KAGGLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert f"put the kaggle.json it downloads in {tmp_path / '.kaggle'}/ and run chmod 600" in how_to_configure(None)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("unauthenticated", ["401", "rejected the credentials", "https://www.kaggle.com/settings"]),
        ("rules", ["403", RULES_MESSAGE, f"https://www.kaggle.com/competitions/{COMPETITION}/rules", "check the name"]),
        ("not-found", ["404", "no competition", COMPETITION]),
        ("rate-limited", ["429", "rate limiting", "wait 30 s"]),
    ],
)
def test_download_http_errors_say_what_to_do(tmp_path, mode, expected):
    dest_dir = tmp_path / "raw"
    with KaggleStub(mode=mode) as stub:
        result = run_download(stub.client_env(tmp_path), dest_dir)

    message = assert_clean_failure(result)
    for fragment in expected:
        assert fragment in message
    assert not (dest_dir / f"{COMPETITION}.zip").exists()


def test_wrong_key_is_rejected_and_never_printed(tmp_path):
    with KaggleStub(key="the-key-the-server-expects") as stub:
        env = stub.client_env(tmp_path, credentials=None)
        env.update(KAGGLE_USERNAME=FAKE_USERNAME, KAGGLE_KEY=FAKE_KEY)  # a key the server does not know
        result = run_download(env, tmp_path / "raw")

    message = assert_clean_failure(result)
    assert "401" in message and "KAGGLE_USERNAME/KAGGLE_KEY" in message


def test_secret_in_a_server_message_is_redacted(tmp_path):
    with KaggleStub(mode="bad-request") as stub:
        stub.error_message = f"invalid request from key {FAKE_KEY}"
        result = run_download(stub.client_env(tmp_path), tmp_path / "raw")

    message = assert_clean_failure(result)
    assert "400" in message and "invalid request from key ***" in message


def test_unreachable_kaggle(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = credentials_env(tmp_path)
    env.update(proxy_env(f"http://127.0.0.1:{closed_port}"))
    write_kaggle_json(Path(env["KAGGLE_CONFIG_DIR"]))
    result = run_download(env, tmp_path / "raw")

    message = assert_clean_failure(result)
    assert message.startswith("error: cannot reach Kaggle: ")



def test_an_answer_that_is_not_json_is_reported_as_such(tmp_path):
    """Issue 21: a proxy's HTML page was reported as "cannot write the download"."""
    dest_dir = tmp_path / "raw"
    with KaggleStub(mode="garbage") as stub:
        result = run_download(stub.client_env(tmp_path), dest_dir)

    message = assert_clean_failure(result)
    assert "not valid JSON" in message and "cannot write" not in message, message
    assert list(dest_dir.iterdir()) == []

# ---- Where credentials come from, without importing kaggle ----


def find_credentials_in(env: dict) -> dict:
    result = run_python(FIND_CREDENTIALS_CODE, env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert not answer["kaggle_imported"]
    assert FAKE_KEY not in result.stdout and FAKE_TOKEN not in result.stdout
    return answer


def test_find_credentials_from_environment_variables(tmp_path):
    env = credentials_env(tmp_path)
    env.update(KAGGLE_USERNAME=FAKE_USERNAME, KAGGLE_KEY=FAKE_KEY)
    assert find_credentials_in(env)["source"] == "KAGGLE_USERNAME/KAGGLE_KEY"


def test_find_credentials_from_kaggle_json_in_config_dir(tmp_path):
    env = credentials_env(tmp_path)
    write_kaggle_json(Path(env["KAGGLE_CONFIG_DIR"]))
    assert find_credentials_in(env) == {
        "source": f"kaggle.json in {env['KAGGLE_CONFIG_DIR']}",
        "warnings": [],
        "kaggle_imported": False,
    }


def test_find_credentials_from_kaggle_json_in_home(tmp_path):
    env = credentials_env(tmp_path)
    del env["KAGGLE_CONFIG_DIR"]
    (Path(env["HOME"]) / ".kaggle").mkdir()
    write_kaggle_json(Path(env["HOME"]) / ".kaggle")
    assert find_credentials_in(env)["source"] == f"kaggle.json in {Path(env['HOME']) / '.kaggle'}"


def test_find_credentials_prefers_an_access_token(tmp_path):
    env = credentials_env(tmp_path)
    write_kaggle_json(Path(env["KAGGLE_CONFIG_DIR"]))
    env["KAGGLE_API_TOKEN"] = FAKE_TOKEN
    assert find_credentials_in(env)["source"] == "KAGGLE_API_TOKEN"


def test_find_credentials_from_access_token_file(tmp_path):
    env = credentials_env(tmp_path)
    token_file = Path(env["HOME"]) / ".kaggle" / "access_token"
    token_file.parent.mkdir()
    token_file.write_text(FAKE_TOKEN + "\n")
    assert find_credentials_in(env)["source"] == f"access token in {token_file}"


def test_find_credentials_in_a_kaggle_notebook(tmp_path):
    env = credentials_env(tmp_path)
    write_kaggle_json(Path(env["KAGGLE_CONFIG_DIR"]))  # the notebook's token comes first, as in the client
    env.update(notebook_env(tmp_path))
    assert find_credentials_in(env)["source"] == f"the Kaggle Notebook's token ({env['KAGGLE_API_V1_TOKEN']})"


def test_find_credentials_none(tmp_path):
    env = credentials_env(tmp_path)
    env["KAGGLE_USERNAME"] = FAKE_USERNAME  # a username without a key is not enough
    assert find_credentials_in(env)["source"] is None


def test_group_readable_kaggle_json_gets_a_chmod_warning(tmp_path):
    env = credentials_env(tmp_path)
    kaggle_json = write_kaggle_json(Path(env["KAGGLE_CONFIG_DIR"]), mode=0o640)
    warnings = find_credentials_in(env)["warnings"]
    assert len(warnings) == 1
    assert f"chmod 600 {kaggle_json}" in warnings[0]


def test_a_kaggle_json_that_is_a_folder_is_named_as_such(tmp_path):
    """Review 57 F: download, submit and submissions said "cannot write the download: Is a directory"; with the
    default source the folder was passed over without a word."""
    env = credentials_env(tmp_path)
    folder = Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    folder.mkdir()
    with KaggleStub() as stub:
        message = assert_clean_failure(run_download({**stub.client_env(tmp_path), **env}, tmp_path / "raw"))
    assert message.startswith(f"error: {folder} is a folder, not the file Kaggle's") and "cannot write" not in message
    assert find_credentials_in(env)["warnings"] == [message.removeprefix("error: ")]
    # `download --source kaggle`: that one line, not the same sentence as a warning first (review 57 I)
    stage = subprocess.run([sys.executable, "-m", "pipeline", "download", "--source", "kaggle"], cwd=PROJECT_ROOT,
                           env={**env, "PIPELINE_ROOT": str(tmp_path / "root")}, capture_output=True, text=True,
                           timeout=120)
    assert stage.returncode == 1 and stage.stderr == f"{message}\n", stage.stderr


def test_a_username_from_the_environment_beside_a_key_in_kaggle_json_is_no_warning(tmp_path):
    """Review 57 F: the client took the pair, yet the warning said it ignored the file."""
    env = credentials_env(tmp_path)
    (Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json").write_text(json.dumps({"key": FAKE_KEY}))
    (Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json").chmod(0o600)
    alone = find_credentials_in(env)
    assert alone["source"] is None and "has no \"username\" and \"key\"" in alone["warnings"][0]
    paired = find_credentials_in({**env, "KAGGLE_USERNAME": FAKE_USERNAME})
    assert paired["source"].startswith("KAGGLE_USERNAME/KAGGLE_KEY with kaggle.json") and paired["warnings"] == []


def test_environment_is_isolated_from_the_real_home(tmp_path):
    with KaggleStub() as stub:
        env = stub.client_env(tmp_path)
    assert env["HOME"] != os.environ.get("HOME")
    assert Path(env["HOME"]).is_relative_to(tmp_path)
    assert (Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json").stat().st_mode & 0o777 == 0o600


def test_a_kaggle_notebook_s_token_is_not_answered_with_a_kaggle_json():
    """The notebook's token is tried first: a kaggle.json, the old advice, would never be read."""
    from pipeline.competition.kaggle_api import how_to_configure

    assert how_to_configure("the Kaggle Notebook's token (/kaggle/token)") == (
        "the notebook's token is Kaggle's, tried before anything else: restart the notebook's session")
