"""A small synchronous client for the admin API (used by the CLI and tools)."""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from p2pml.errors import ApiError

DEFAULT_API = "http://127.0.0.1:8080"


class ApiClient:
    def __init__(
        self, base: str | None = None, token: str | None = None, timeout: float = 60.0
    ) -> None:
        self.base = (base or os.environ.get("P2PML_API") or DEFAULT_API).rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def with_token_file(cls, base: str | None, token_file: Path | None) -> ApiClient:
        token = None
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as exc:
                raise ApiError(0, f"cannot read token file {token_file}: {exc.strerror}") from None
        return cls(base, token)

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        data: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        hdrs = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if method in ("POST", "DELETE") and self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                err = json.loads(raw)
                raise ApiError(exc.code, err.get("error", "error"), err.get("reason", "")) from None
            except (json.JSONDecodeError, AttributeError):
                raise ApiError(exc.code, raw.decode(errors="replace")[:200] or str(exc)) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, f"cannot reach the node at {self.base}: {exc.reason}") from None
        except OSError as exc:
            raise ApiError(0, f"cannot reach the node at {self.base}: {exc}") from None
        if "json" in ctype:
            return json.loads(raw)
        return raw.decode()

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self._request("POST", path, body=body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def download(
        self, path: str, dest: Path, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, str]:
        """GET ``path`` into ``dest`` (streamed; written in place only when complete).

        Returns the response headers (lower-case names)."""
        req = urllib.request.Request(self.base + path, method="GET")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            try:
                resp = urllib.request.urlopen(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                self._raise_http(exc)
            except (urllib.error.URLError, OSError) as exc:
                why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                raise ApiError(0, f"cannot reach the node at {self.base}: {why}") from None
            with resp, os.fdopen(fd, "wb") as out:
                fd = -1
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                headers = {k.lower(): v for k, v in resp.headers.items()}
            if total and done != total:
                raise ApiError(0, f"download cut short: {done} of {total} bytes")
            os.replace(tmp, dest)
            return headers
        finally:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _raise_http(exc: urllib.error.HTTPError) -> Any:
        raw = exc.read()
        try:
            err = json.loads(raw)
            raise ApiError(exc.code, err.get("error", "error"), err.get("reason", "")) from None
        except (json.JSONDecodeError, AttributeError):
            raise ApiError(exc.code, raw.decode(errors="replace")[:200] or str(exc)) from None

    def upload(
        self, path: str, file: Path, progress: Callable[[int, int], None] | None = None
    ) -> Any:
        """POST a file as a streamed body (never read whole into memory)."""
        total = file.stat().st_size

        def chunks() -> Iterator[bytes]:
            done = 0
            with open(file, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                    yield chunk

        return self._request(
            "POST",
            path,
            data=chunks(),
            headers={
                "Content-Length": str(total),
                "Content-Type": "application/octet-stream",
                "X-Filename": file.name,
            },
        )
