"""A stand-in for the Kaggle API, so tests can run the real kaggle client without a network.

The client has no endpoint setting, so it is pointed at this server as at an HTTP proxy:
with KAGGLE_API_ENVIRONMENT=LOCALHOST it calls http://localhost/api/v1/..., and HTTP_PROXY sends
those requests, in absolute form, to this server on 127.0.0.1. The environment must be set
before the client is imported, so tests run the client in a subprocess:

    with KaggleStub(mode="ok") as stub:
        env = stub.client_env(tmp_path)  # fake credentials, a temporary HOME, the proxy settings
        subprocess.run([sys.executable, "-m", "pipeline", "download", "--source", "kaggle"], env=env, ...)
        assert stub.competition_names == ["digit-recognizer"]

Modes (settable at any time through `stub.mode`):
    ok               everything works
    unauthenticated  every API call answers 401 "Unauthenticated" (as do wrong credentials)
    rules            403, the competition's rules were not accepted
    not-found        404, no such competition
    rate-limited     429 with Retry-After
    bad-request      400 with `stub.error_message` as the server's message
    drop             the zip is sent with its full Content-Length, then the socket closes half way
    drop-once        as drop, but a request with a Range header gets those bytes (206): a resumed download
    upload-fails     the PUT of the submission file answers 500
    silent           every API call is received and never answered (the connection stays open)
    trickle          the API answers, but the zip comes one byte every `stub.trickle_interval_s`
    garbage          every API call answers 200 with a JSON content type and a body that is not JSON
    list-silent      only ListSubmissions is received and never answered (a submit goes through, its wait stalls)
    list-trickle     only ListSubmissions' answer comes one byte every `stub.trickle_interval_s`
    list-fails       only ListSubmissions answers 500
    list-huge        ListSubmissions answers a valid listing of `stub.huge_listing_bytes` bytes (a broken server)

Scoring (ListSubmissions, GetSubmission): a new submission is PENDING for `stub.pending_polls`
listings, then `stub.outcome`: "complete" (publicScore `stub.public_score`, privateScore
`stub.private_score`, "" when Kaggle gives none), "error" (errorDescription `stub.error_description`,
which a test may give a newline) or "pending" (never scored). `stub.omit_ref`: CreateSubmission's answer
carries no ref; `stub.answer_created_after_s`: it comes that many seconds after the submission is made (a client
killed meanwhile). `stub.scored` holds the submissions made through the API as Kaggle
would list them; a test may add its own (`stub.add_submission`). ListSubmissions answers the page the
client asks for (`page`, `pageSize`), or always the first with `stub.ignores_paging`.
"""

import base64
import datetime
import email.utils
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ARCHIVE = PROJECT_ROOT / "data" / "sample" / "digit-recognizer-sample.zip"  # config.SAMPLE_ARCHIVE

# Distinctive, so a test can check they never appear in any output.
FAKE_USERNAME = "stub-user"
FAKE_KEY = "stubkey-0f1e2d3c4b5a69788796a5b4-SECRET"
FAKE_TOKEN = "KGAT_stubtoken-5a4b3c2d1e0f-SECRET"

MODES = ("ok", "unauthenticated", "rules", "not-found", "rate-limited", "bad-request", "drop", "drop-once",
         "upload-fails", "silent", "trickle", "garbage", "list-silent", "list-trickle", "list-fails", "list-huge")
RULES_MESSAGE = "You must accept this competition's rules before you'll be able to download files."
SUBMIT_MESSAGE = "Successfully submitted to Digit Recognizer"
API_PREFIX = "/api/v1/"
FILES_PREFIX = "/stub-files/"
UPLOAD_PREFIX = "/stub-upload/"
# The stub's address as the client sees it: the host the LOCALHOST environment calls, via the proxy.
PUBLIC_BASE = "http://localhost"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
SOCKET_TIMEOUT_S = 30  # a client that stops talking cannot hold a server thread forever

ERROR_ANSWERS = {
    "unauthenticated": (401, "Unauthenticated"),
    "rules": (403, RULES_MESSAGE),
    "not-found": (404, "Competition not found"),
    "rate-limited": (429, "Too many requests"),
}


class KaggleStub:
    """The Kaggle API stand-in; a context manager that serves on 127.0.0.1 on a free port."""

    def __init__(
        self,
        mode: str = "ok",
        archive: Path | None = None,
        username: str = FAKE_USERNAME,
        key: str = FAKE_KEY,
        token: str = FAKE_TOKEN,
        last_modified: float | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.archive = Path(archive or SAMPLE_ARCHIVE)
        self.username, self.key, self.token = username, key, token
        # The zip's Last-Modified; the client skips a download when its local copy is not older.
        self.last_modified = last_modified if last_modified is not None else self.archive.stat().st_mtime
        self.error_message = "Bad request"
        self.retry_after_s = 30
        self.trickle_interval_s = 0.2
        self._stopping = threading.Event()  # ends the requests a silent or trickling stub holds open
        self.pending_polls = 1
        self.outcome = "complete"
        self.public_score = "0.99543"
        self.private_score = ""
        self.error_description = "Submission scoring failed: ERROR: Required column 'Label' could not be found"
        self.omit_ref = False
        self.answer_created_after_s = 0.0  # CreateSubmission records the submission, then answers this much later
        self.ignores_paging = False  # True: ListSubmissions answers its first page whatever page is asked for
        self.huge_listing_bytes = 64 * 10**6
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.clear_records()

    # ---- What the stub received, for the tests to assert on ----

    def clear_records(self) -> None:
        self.requests: list[dict] = []  # every request: method, path, authorization, range
        self.api_calls: list[tuple[str, dict]] = []  # (method name, JSON body)
        self.competition_names: list[str] = []
        self.uploads: dict[str, bytes] = {}  # upload token -> the bytes PUT to it
        self.submissions: list[dict] = []  # CreateSubmission bodies, with the uploaded bytes under "file"
        self.downloads_started = 0
        self.scored: list[dict] = []  # the competition's submissions as ListSubmissions shows them, newest last
        self._polls_left: dict[int, int] = {}  # ref -> listings still PENDING

    @property
    def auth_headers(self) -> list[str | None]:
        return [request["authorization"] for request in self.requests if request["path"].startswith(API_PREFIX)]

    @property
    def paths(self) -> list[str]:
        return [request["path"] for request in self.requests]

    @property
    def submitted_files(self) -> list[bytes]:
        return [submission["file"] for submission in self.submissions]

    @property
    def submission_descriptions(self) -> list[str]:
        return [submission.get("submissionDescription", "") for submission in self.submissions]

    def _record(self, kind: str, *items) -> None:
        with self._lock:
            if kind == "request":
                self.requests.append(items[0])
            elif kind == "call":
                self.api_calls.append(items)
                if "competitionName" in items[1]:
                    self.competition_names.append(items[1]["competitionName"])
            elif kind == "upload":
                self.uploads[items[0]] = items[1]
            elif kind == "submission":
                self.submissions.append(items[0])
            elif kind == "download":
                self.downloads_started += 1

    # ---- Scoring ----

    def add_submission(self, description: str, file_name: str = "submission.csv") -> dict:
        """A submission as Kaggle keeps it, PENDING until it has been listed `pending_polls` times."""
        with self._lock:
            ref = 1000 + len(self.scored) + 1
            submission = {
                "ref": ref, "totalBytes": 0, "description": description, "errorDescription": "",
                "fileName": file_name, "publicScore": "", "privateScore": "", "status": "PENDING",
                "submittedBy": self.username, "teamName": self.username,
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "url": f"/submissions/{ref}/{file_name}",
            }
            self.scored.append(submission)
            self._polls_left[ref] = self.pending_polls
        return submission

    def _advance(self, submission: dict) -> dict:
        """The submission as one more look at it shows it: scored once its pending listings are used up."""
        ref = submission["ref"]
        if submission["status"] == "PENDING":
            polls_left = self._polls_left.get(ref, 0)
            self._polls_left[ref] = polls_left - 1
            if polls_left <= 0 and self.outcome == "complete":
                submission.update(status="COMPLETE", publicScore=self.public_score, privateScore=self.private_score)
            elif polls_left <= 0 and self.outcome == "error":
                submission.update(status="ERROR", errorDescription=self.error_description)
        return dict(submission)

    def listing(self, page: int = 1, page_size: int = 0) -> list[dict]:
        """ListSubmissions' answer: newest first, the page asked for (all when page_size is 0, or when
        `ignores_paging`, a server that always answers its first page), each looked at once more."""
        with self._lock:
            newest_first = list(reversed(self.scored))
            if page_size:
                first = 0 if self.ignores_paging else (page - 1) * page_size
                newest_first = newest_first[first:first + page_size]
            return [self._advance(submission) for submission in newest_first]

    def submission(self, ref: int) -> dict | None:
        with self._lock:
            found = [submission for submission in self.scored if submission["ref"] == ref]
            return self._advance(found[0]) if found else None

    # ---- Credentials ----

    @property
    def basic_auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.key}".encode()).decode()

    def accepts(self, authorization: str | None) -> bool:
        return authorization in (self.basic_auth, f"Bearer {self.token}")

    # ---- Lifecycle ----

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "KaggleStub":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
        self._server.daemon_threads = True
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> "KaggleStub":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ---- The environment of a subprocess that uses the stub ----

    def client_env(self, tmp_path: Path, credentials: str | None = "kaggle.json") -> dict[str, str]:
        """Environment for a subprocess running the kaggle client against this stub.

        credentials: "kaggle.json" (a chmod 600 file in KAGGLE_CONFIG_DIR), "env"
        (KAGGLE_USERNAME/KAGGLE_KEY), "token" (KAGGLE_API_TOKEN), "notebook" (the token file a Kaggle
        Notebook names in KAGGLE_API_V1_TOKEN) or None (no credentials at all).
        HOME is a fresh folder under tmp_path, so the real ~/.kaggle is never read or written.
        """
        home = Path(tmp_path) / "kaggle-stub-home"
        config_dir = Path(tmp_path) / "kaggle-stub-config"
        home.mkdir(parents=True, exist_ok=True)
        config_dir.mkdir(parents=True, exist_ok=True)
        env = isolated_env(home, config_dir)
        env.update(proxy_env(self.proxy_url))
        if credentials == "kaggle.json":
            write_kaggle_json(config_dir, self.username, self.key)
        elif credentials == "env":
            env.update(KAGGLE_USERNAME=self.username, KAGGLE_KEY=self.key)
        elif credentials == "token":
            env["KAGGLE_API_TOKEN"] = self.token
        elif credentials == "notebook":
            env.update(notebook_env(home, self.token))
        elif credentials is not None:
            raise ValueError("credentials must be 'kaggle.json', 'env', 'token', 'notebook' or None,"
                             f" not {credentials!r}")
        return env

    # ---- Answers ----

    def file_url(self, competition: str) -> str:
        return f"{PUBLIC_BASE}{FILES_PREFIX}{competition}.zip"

    def upload_url(self, upload_token: str) -> str:
        return f"{PUBLIC_BASE}{UPLOAD_PREFIX}{upload_token}"

    def last_modified_header(self) -> str:
        return email.utils.formatdate(self.last_modified, usegmt=True)


def isolated_env(home: Path, config_dir: Path) -> dict[str, str]:
    """os.environ without any Kaggle credentials or proxies, with HOME and config in temporary folders."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("KAGGLE_") and name.lower() not in PROXY_VARIABLES
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        KAGGLE_CONFIG_DIR=str(config_dir),
        KAGGLE_API_ENVIRONMENT="LOCALHOST",  # the client calls http://localhost/api/v1/...
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


def notebook_env(folder: Path, token: str = FAKE_TOKEN) -> dict[str, str]:
    """What a Kaggle Notebook's environment holds for the client: the token in a file KAGGLE_API_V1_TOKEN names."""
    token_file = Path(folder) / "kaggle-notebook-token"
    token_file.write_text(token + "\n")
    return {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KAGGLE_DATA_PROXY_URL": "http://127.0.0.1:9/unused",
            "KAGGLE_API_V1_TOKEN": str(token_file)}


def proxy_env(proxy_url: str) -> dict[str, str]:
    """Send every request through proxy_url; both spellings, since requests prefers the lower-case one."""
    env = {}
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        env[name] = env[name.upper()] = proxy_url
    env["no_proxy"] = env["NO_PROXY"] = ""  # localhost must go through the proxy too
    return env


def write_kaggle_json(config_dir: Path, username: str = FAKE_USERNAME, key: str = FAKE_KEY, mode: int = 0o600) -> Path:
    path = Path(config_dir) / "kaggle.json"
    path.write_text(json.dumps({"username": username, "key": key}))
    path.chmod(mode)
    return path


class _StubHandler(BaseHTTPRequestHandler):
    """One request. HTTP/1.0, so every answer closes its connection and nothing lingers."""

    protocol_version = "HTTP/1.0"
    timeout = SOCKET_TIMEOUT_S

    @property
    def stub(self) -> KaggleStub:
        return self.server.stub

    def log_message(self, format, *args) -> None:  # keep the test output clean
        pass

    def _path(self) -> str:
        return urlsplit(self.path).path  # the proxy form is absolute: http://localhost/api/v1/...

    def _record_request(self) -> None:
        self.stub._record(
            "request",
            {
                "method": self.command,
                "path": self._path(),
                "authorization": self.headers.get("Authorization"),
                "range": self.headers.get("Range"),
            },
        )

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked_body()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked_body(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk
        while self.rfile.readline().strip():  # trailers, up to the blank line
            pass
        return b"".join(chunks)

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, value: dict, headers: dict | None = None) -> None:
        self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send_api_error(self, status: int, message: str) -> None:
        """Kaggle's error shape: the client raises HTTPError(message) for a JSON code >= 400."""
        headers = {"Retry-After": str(self.stub.retry_after_s)} if status == 429 else {}
        self._send_json(status, {"code": status, "message": message}, headers)

    # ---- POST /api/v1/<service>/<method> ----

    def do_POST(self) -> None:
        self._record_request()
        body = self._read_body()
        path = self._path()
        if not path.startswith(API_PREFIX):
            return self._send_api_error(404, f"no such endpoint {path}")
        method_name = path.rsplit("/", 1)[-1]
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return self._send_api_error(400, "request body is not JSON")
        self.stub._record("call", method_name, request)
        if self.stub.mode == "silent" or (self.stub.mode == "list-silent" and method_name == "ListSubmissions"):
            return self._never_answer()
        if self.stub.mode == "garbage":
            return self._send(200, b"<html>Service Unavailable</html>", {"Content-Type": "application/json"})
        if method_name == "IntrospectToken":  # checks an access token, before any other call
            return self._introspect_token(request)
        if not self.stub.accepts(self.headers.get("Authorization")):
            return self._send_api_error(401, "Unauthenticated")
        error = self._mode_error()
        if error:
            return self._send_api_error(*error)
        handler = {
            "DownloadDataFiles": self._download_data_files,
            "StartSubmissionUpload": self._start_submission_upload,
            "CreateSubmission": self._create_submission,
            "ListSubmissions": self._list_submissions,
            "GetSubmission": self._get_submission,
        }.get(method_name)
        if handler is None:
            return self._send_api_error(404, f"the stub does not implement {method_name}")
        handler(request)

    def _mode_error(self) -> tuple[int, str] | None:
        if self.stub.mode == "bad-request":
            return 400, self.stub.error_message
        return ERROR_ANSWERS.get(self.stub.mode)

    def _introspect_token(self, request: dict) -> None:
        active = request.get("token") == self.stub.token and self.stub.mode != "unauthenticated"
        self._send_json(200, {"active": active, "username": self.stub.username if active else ""})

    def _download_data_files(self, request: dict) -> None:
        # Kaggle answers with a redirect to a signed storage URL; the client follows it with a GET.
        self._send(302, headers={"Location": self.stub.file_url(request.get("competitionName", ""))})

    def _start_submission_upload(self, request: dict) -> None:
        upload_token = f"blob-token-{len(self.stub.api_calls)}"
        self._send_json(200, {"token": upload_token, "createUrl": self.stub.upload_url(upload_token)})

    def _create_submission(self, request: dict) -> None:
        upload_token = request.get("blobFileTokens", "")
        if upload_token not in self.stub.uploads:
            return self._send_api_error(400, f"no uploaded file for token {upload_token!r}")
        self.stub._record("submission", {**request, "file": self.stub.uploads[upload_token]})
        scored = self.stub.add_submission(request.get("submissionDescription", ""),
                                          request.get("fileName") or "submission.csv")
        answer = {"message": SUBMIT_MESSAGE}
        if not self.stub.omit_ref:
            answer["ref"] = scored["ref"]
        if self.stub._stopping.wait(self.stub.answer_created_after_s):  # a client killed while Kaggle has it
            return
        self._send_json(200, answer)

    def _list_submissions(self, request: dict) -> None:
        if self.stub.mode == "list-fails":
            return self._send_api_error(500, "Internal error")
        if self.stub.mode == "list-huge":
            return self._send_huge_listing()
        page = self.stub.listing(int(request.get("page") or 1), int(request.get("pageSize") or 0))
        body = json.dumps({"submissions": page, "nextPageToken": ""}).encode()
        if self.stub.mode == "list-trickle":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return self._trickle(body)
        self._send(200, body, {"Content-Type": "application/json"})

    def _send_huge_listing(self) -> None:
        """About huge_listing_bytes of valid JSON, written a piece at a time (the stub never holds it whole)."""
        item = json.dumps({"ref": 1, "description": "x" * 900, "status": "COMPLETE", "publicScore": "0.5"}).encode()
        count = max(1, self.stub.huge_listing_bytes // (len(item) + 1))
        head, tail = b'{"nextPageToken": "", "submissions": [', b"]}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(head) + count * (len(item) + 1) - 1 + len(tail)))
        self.end_headers()
        try:
            self.wfile.write(head + item)
            for _ in range(count - 1):
                self.wfile.write(b"," + item)
            self.wfile.write(tail)
        except OSError:  # the client gave up and closed the connection
            pass
        self.close_connection = True

    def _get_submission(self, request: dict) -> None:
        found = self.stub.submission(int(request.get("ref") or 0))
        if found is None:
            return self._send_api_error(404, f"no submission {request.get('ref')}")
        self._send_json(200, found)

    # ---- GET of the zip, PUT of a submission file ----

    def do_GET(self) -> None:
        self._record_request()
        path = self._path()
        if not (path.startswith(FILES_PREFIX) and path.endswith(".zip")):
            return self._send(404, b"not found")
        self.stub._record("download")
        content = self.stub.archive.read_bytes()
        resumed = self.stub.mode == "drop-once" and self.headers.get("Range")
        if resumed:  # the client's retry: the bytes from where the dropped answer stopped
            start = int(resumed.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            content = content[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(content)))  # the full size, also when dropping
        self.send_header("Last-Modified", self.stub.last_modified_header())
        self.end_headers()
        if self.stub.mode == "drop" or (self.stub.mode == "drop-once" and not resumed):
            return self._drop_after(content[: len(content) // 2])
        if self.stub.mode == "trickle":
            return self._trickle(content)
        self.wfile.write(content)

    def _never_answer(self) -> None:
        """Keep the connection open and say nothing, as an overloaded or broken server does."""
        self.stub._stopping.wait(SOCKET_TIMEOUT_S)
        self.close_connection = True

    def _trickle(self, content: bytes) -> None:
        """One byte at a time, each well within any read timeout: only a deadline ends this."""
        for index in range(len(content)):
            if self.stub._stopping.wait(self.stub.trickle_interval_s):
                break
            try:
                self.wfile.write(content[index:index + 1])
                self.wfile.flush()
            except OSError:  # the client gave up and closed the connection
                break
        self.close_connection = True

    def _drop_after(self, partial_content: bytes) -> None:
        """Send part of the body, then close the socket: a connection lost mid-download."""
        self.wfile.write(partial_content)
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def do_PUT(self) -> None:
        self._record_request()
        body = self._read_body()
        path = self._path()
        if not path.startswith(UPLOAD_PREFIX):
            return self._send(404, b"not found")
        if self.stub.mode == "upload-fails":
            return self._send(500, b"upload failed")
        self.stub._record("upload", path[len(UPLOAD_PREFIX):], body)
        self._send(200, b"{}", {"Content-Type": "application/json"})
