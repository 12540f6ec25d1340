"""Kaggle's credentials, found where the client looks for them (without importing it), and kept out of
every message: `find_credentials`, `credential_warnings`, `redact`, and the one-line errors built on it.
"""

import base64
import json
import os
import stat
import sys
from pathlib import Path

from pipeline.core.errors import PipelineError, one_line

MAX_DETAIL_CHARS = 200  # of a server message or exception text quoted in an error
MAX_MESSAGE_CHARS = 800


# ---- Where the credentials come from (mirrors the client, without importing it) ----


def _kaggle_config_dir() -> Path:
    """The folder the client reads kaggle.json from, computed as KaggleApi.config_dir is."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    home_kaggle = Path(os.path.expanduser("~")) / ".kaggle"
    if sys.platform.startswith("linux") and not home_kaggle.exists():
        config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return Path(config_home) / "kaggle"
    return home_kaggle


def _kaggle_json_path() -> Path:
    return _kaggle_config_dir() / "kaggle.json"


_NOT_JSON = object()  # a file missing, unreadable or not JSON (`null` is JSON: None)


def _json_value(path: Path):
    """The file's JSON value, or _NOT_JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return _NOT_JSON


def _read_json_file(path: Path) -> dict | None:
    """The file's JSON object; None when it is missing, unreadable or not an object."""
    value = _json_value(path)
    return value if isinstance(value, dict) else None


def _json_kind(path: Path) -> str | None:
    """'array', 'string', ... for a file of valid JSON that is not an object; None otherwise."""
    value = _json_value(path)
    if value is _NOT_JSON or isinstance(value, dict):
        return None
    # JSON's own names: a file of `null` is "a JSON null", not "a JSON NoneType".
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def refuse_a_kaggle_json_the_client_breaks_on() -> None:
    """kaggle.json valid JSON but not an object (a list): the client fails on it with a TypeError of its own; a
    folder, with an IsADirectoryError (said as a download that could not be written)."""
    if folder := kaggle_json_folder():
        raise PipelineError(folder)
    path = _kaggle_json_path()
    kind = _json_kind(path)  # None: missing, unreadable or not JSON, which the client ignores (a warning says so)
    if kind:
        raise PipelineError(f"{path}: a JSON {kind}, expected an object"
                            ' {"username": "...", "key": "..."}: fix it or remove it (README, "Kaggle credentials")')


def _read_token_file(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (OSError, ValueError):
        return None


def _token_file_paths() -> list[Path]:
    home_kaggle = Path(os.path.expanduser("~/.kaggle"))
    return [home_kaggle / "access_token", home_kaggle / "access_token.txt"]


def _access_token_source() -> tuple[str, str] | None:
    """(description, token) of the access token, tried first: kagglesdk's own lookup, which reads the
    environment and files only (no network, no config folder), so it finds what the client will use,
    a Kaggle Notebook's token included."""
    from kagglesdk import get_access_token_from_env

    try:
        token, source = get_access_token_from_env()
    except (OSError, UnicodeDecodeError) as error:  # a folder, a file it may not read, bytes that are not text
        where = getattr(error, "filename", None) or os.environ.get("KAGGLE_API_TOKEN") or _token_file_paths()[0]
        raise PipelineError(f"{where}: cannot be read as a Kaggle access token ({type(error).__name__}); fix it or"
                            " remove it (README, 'Kaggle credentials')") from None
    if not token:
        return None
    if source == "KAGGLE_API_V1_TOKEN":  # inside a Kaggle Notebook
        return f"the Kaggle Notebook's token ({os.environ.get(source)})", token
    if source == "KAGGLE_API_TOKEN":
        value = os.environ.get(source, "")
        return (f"access token file {value} (KAGGLE_API_TOKEN)" if token != value else "KAGGLE_API_TOKEN"), token
    path = next((path for path in _token_file_paths() if _read_token_file(path) == token), _token_file_paths()[0])
    return f"access token in {path}", token


def _api_key_source() -> str | None:
    """Where username and key come from: kaggle.json, overridden by KAGGLE_USERNAME/KAGGLE_KEY."""
    file_values = _read_json_file(_kaggle_json_path()) or {}
    env_has_both = bool(os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))
    file_has_both = bool(file_values.get("username") and file_values.get("key"))
    if env_has_both:
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if file_has_both:
        return f"kaggle.json in {_kaggle_config_dir()}"
    username = os.environ.get("KAGGLE_USERNAME") or file_values.get("username")
    key = os.environ.get("KAGGLE_KEY") or file_values.get("key")
    if username and key:  # one from the environment, the other from the file
        return f"KAGGLE_USERNAME/KAGGLE_KEY with kaggle.json in {_kaggle_config_dir()}"
    return None


def _oauth_credentials_path() -> Path:
    return Path(os.path.expanduser("~/.kaggle/credentials.json"))


def _oauth_source() -> str | None:
    """`kaggle auth login` saves a refresh token, tried after the API key."""
    credentials = _read_json_file(_oauth_credentials_path()) or {}
    return f"OAuth credentials in {_oauth_credentials_path()}" if credentials.get("refresh_token") else None


def find_credentials() -> str | None:
    """Where the client would take its credentials from, as a short description; None when nowhere.

    Same order as the client: an access token (a Kaggle Notebook's, KAGGLE_API_TOKEN as a value or a
    file path, else ~/.kaggle/access_token), then username and key (KAGGLE_USERNAME/KAGGLE_KEY or kaggle.json in
    $KAGGLE_CONFIG_DIR, ~/.kaggle or ~/.config/kaggle), then `kaggle auth login` credentials.
    The secret itself is never part of the answer, and the client is not imported.
    """
    token_source = _access_token_source()
    if token_source:
        return token_source[0]
    return _api_key_source() or _oauth_source()


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False


def credential_warnings() -> list[str]:
    """Problems with the credential files that do not stop the client but should be fixed."""
    warnings = []
    kaggle_json = _kaggle_json_path()
    for path in [kaggle_json, *_token_file_paths()]:
        if path.is_file() and os.name != "nt" and _readable_by_others(path):
            warnings.append(f"{path} is readable by other users of this machine; run: chmod 600 {path}")
    if folder := kaggle_json_folder():
        warnings.append(folder)
    if kaggle_json.is_file():
        values = _read_json_file(kaggle_json)
        if values is None:
            kind = _json_kind(kaggle_json)
            warnings.append(f"{kaggle_json} is a JSON {kind}, not an object with \"username\" and \"key\", so the"
                            " kaggle client cannot use it" if kind else
                            f"{kaggle_json} is not valid JSON, so the kaggle client ignores it")
        elif not (values.get("username") and values.get("key")) and _api_key_source() is None:
            # (the other half in KAGGLE_USERNAME or KAGGLE_KEY: the client takes the pair, and uses the file)
            warnings.append(f"{kaggle_json} has no \"username\" and \"key\", so the kaggle client ignores it")
    if (shadowed := _shadowed_kaggle_json()) is not None:
        warnings.append(f"{shadowed} is ignored: the kaggle client reads {kaggle_json.parent}/ since that folder"
                        f" exists; move it there (mv {shadowed} {kaggle_json.parent}/)")
    return warnings


def _shadowed_kaggle_json() -> Path | None:
    """A kaggle.json in ~/.config/kaggle (the client's folder on Linux while ~/.kaggle is missing, and where the
    pipeline's advice once put it) that the client no longer reads, ~/.kaggle having been made since without one."""
    if os.environ.get("KAGGLE_CONFIG_DIR") or not sys.platform.startswith("linux") or _kaggle_json_path().exists():
        return None
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    candidate = Path(config_home) / "kaggle" / "kaggle.json"
    return candidate if candidate.is_file() and candidate.parent != _kaggle_config_dir() else None


def kaggle_json_folder() -> str | None:
    """The problem of a kaggle.json that is a folder (the client failed on it with "Is a directory", which read as
    a download that could not be written); None for a file, or none."""
    kaggle_json = _kaggle_json_path()
    if kaggle_json.is_dir():
        return (f"{kaggle_json} is a folder, not the file Kaggle's \"Create New Token\" downloads, so the kaggle"
                " client cannot use it: remove it, or put the kaggle.json file there instead")
    return None


# ---- Keeping secrets out of messages ----


def _secrets() -> list[str]:
    """Every credential value this process could hand to the client, in the forms they travel in."""
    file_values = _read_json_file(_kaggle_json_path()) or {}
    oauth_values = _read_json_file(_oauth_credentials_path()) or {}
    secrets = [
        os.environ.get("KAGGLE_KEY"),
        file_values.get("key"),
        oauth_values.get("refresh_token"),
        oauth_values.get("access_token"),
        *(_read_token_file(path) for path in _token_file_paths()),
    ]
    try:
        token_source = _access_token_source()
    except PipelineError:  # an unreadable token file holds nothing to hide
        token_source = None
    if token_source:
        secrets.append(token_source[1])
    usernames = {os.environ.get("KAGGLE_USERNAME"), file_values.get("username")} - {None}
    for key in {os.environ.get("KAGGLE_KEY"), file_values.get("key")} - {None}:
        for username in usernames:  # the Basic auth header carries base64("user:key")
            secrets.append(base64.b64encode(f"{username}:{key}".encode()).decode())
    # Each line of a value too, without its spaces: a token ending in "\r" (a .env file from Windows) or holding a
    # second line shows in an error escaped ("tok\\r", two characters), which the value itself does not match.
    forms = {form.strip() for value in secrets if value for form in [str(value), *str(value).splitlines()]}
    # Longest first, so a secret that contains another is replaced whole.
    return sorted({form for form in forms if len(form) >= 4}, key=len, reverse=True)


def redact(text: str) -> str:
    """text with every Kaggle key and token it contains replaced by ***."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def _one_line(text: str, max_chars: int) -> str:
    """text on one line, without secrets (redacted before shortening, so none is cut in half)."""
    return one_line(redact(str(text)), max_chars, every_line=True)


def _detail(text) -> str:
    """A server message or exception text, short enough to leave room for the advice around it."""
    return _one_line(text, MAX_DETAIL_CHARS)


def _error(message: str) -> PipelineError:
    return PipelineError(_one_line(message, MAX_MESSAGE_CHARS))


NEW_TOKEN = "create a token at https://www.kaggle.com/settings -> API -> Create New Token"


def how_to_configure(source: str | None) -> str:
    """What to do about the credentials from source (find_credentials' words; None: none found). An access token
    is tried before any kaggle.json, so a stale one must go; kaggle.json is read from $KAGGLE_CONFIG_DIR when set."""
    # $KAGGLE_CONFIG_DIR when set, else ~/.kaggle (README's step 2), which the client reads whenever it exists: one
    # put in ~/.config/kaggle, its folder while ~/.kaggle is missing, was ignored once ~/.kaggle was made.
    folder = _kaggle_config_dir() if os.environ.get("KAGGLE_CONFIG_DIR") else Path(os.path.expanduser("~")) / ".kaggle"
    put_kaggle_json = f"put the kaggle.json it downloads in {folder}/ and run chmod 600 {folder / 'kaggle.json'}"
    if source == "KAGGLE_API_TOKEN" or (source or "").endswith("(KAGGLE_API_TOKEN)"):
        return f"{NEW_TOKEN} and set KAGGLE_API_TOKEN to it, or unset KAGGLE_API_TOKEN to use a kaggle.json"
    if source and source.startswith("access token in "):
        where = source.removeprefix("access token in ")
        return f"{NEW_TOKEN} and replace {where} with it, or delete {where} to use a kaggle.json"
    if source and source.startswith("the Kaggle Notebook's token"):
        return "the notebook's token is Kaggle's, tried before anything else: restart the notebook's session"
    if source and source.startswith("KAGGLE_USERNAME/KAGGLE_KEY"):  # they win over a kaggle.json
        return (f"{NEW_TOKEN} and set KAGGLE_USERNAME and KAGGLE_KEY to the username and key in the kaggle.json it"
                f" downloads, or unset both to use a kaggle.json in {folder}/")
    if source is None and bool(os.environ.get("KAGGLE_USERNAME")) != bool(os.environ.get("KAGGLE_KEY")):
        given, missing = ("KAGGLE_USERNAME", "KAGGLE_KEY") if os.environ.get("KAGGLE_USERNAME") else \
            ("KAGGLE_KEY", "KAGGLE_USERNAME")
        return f"{given} is set without {missing}: set {missing} too, or {NEW_TOKEN} and {put_kaggle_json}"
    return (f"{NEW_TOKEN}, {put_kaggle_json}, or set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN to an"
            " access token)")
