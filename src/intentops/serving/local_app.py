"""The local model server: MLflow's scoring server for the registered pyfunc, behind request limits.

`intentops deploy --target local` runs `uvicorn --factory intentops.serving.local_app:create_app`. The app is the one
`mlflow models serve` runs (`mlflow.pyfunc.scoring_server.init`: /ping, /health, /version, /invocations, and a 504
after `MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT` seconds), wrapped in `RequestLimits`, which answers an utterance longer
than the limit with 422 and a body too large to hold such utterances with 413 before the model sees either. A
bounded prompt and the pyfunc's bounded `max_new_tokens` are what bound a request's generation time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MODEL_URI_ENV = "INTENTOPS_SERVE_MODEL_URI"
MAX_TEXT_CHARS_ENV = "INTENTOPS_SERVE_MAX_TEXT_CHARS"
# Utterances one request may carry; with the per-utterance limit this bounds the body size (413 above it).
MAX_ROWS = 256
BODY_OVERHEAD_BYTES = 64 * 1024
LIMITED_PATHS = ("/invocations",)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestTooLarge(ValueError):
    """A request the server refuses to run; `status` is the HTTP answer (413 or 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def max_body_bytes(max_text_chars: int) -> int:
    """The largest body that can hold MAX_ROWS utterances of `max_text_chars` (6 bytes a character: `\\uXXXX`)."""
    return max_text_chars * 6 * MAX_ROWS + BODY_OVERHEAD_BYTES


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def check_body(body: bytes, content_type: str, max_text_chars: int) -> None:
    """Raise RequestTooLarge (422) when any utterance in the body is longer than `max_text_chars` characters.

    Every JSON string counts (dataframe_records, dataframe_split, inputs, instances all carry the utterances as
    strings, and nothing else in them is long); CSV bodies are checked line by line.
    """
    if "json" in content_type:
        try:
            texts = _strings(json.loads(body))
        except ValueError:
            return  # not JSON after all: the scoring server answers it with its own 400
    else:
        texts = body.decode("utf-8", errors="replace").splitlines()
    longest = max((len(text) for text in texts), default=0)
    if longest > max_text_chars:
        raise RequestTooLarge(
            422,
            f"an utterance has {longest} characters; this server accepts at most {max_text_chars} "
            "(serving.max_text_chars, default data.max_text_chars)",
        )


class RequestLimits:
    """ASGI middleware: 413 for a body over `max_body_bytes`, 422 for an utterance over `max_text_chars`."""

    def __init__(self, app: ASGIApp, max_text_chars: int) -> None:
        if max_text_chars < 1:
            raise ValueError(f"max_text_chars must be at least 1, got {max_text_chars}")
        self.app = app
        self.max_text_chars = max_text_chars
        self.max_body_bytes = max_body_bytes(max_text_chars)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in LIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        try:
            declared = int(headers.get("content-length", "0") or 0)
            if declared > self.max_body_bytes:
                raise RequestTooLarge(413, self._too_large(declared))
            body = await self._read(receive)
            check_body(body, headers.get("content-type", ""), self.max_text_chars)
        except RequestTooLarge as exc:
            await _answer(send, exc.status, str(exc))
            return
        except ValueError:
            await _answer(send, 400, "invalid Content-Length header")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RequestTooLarge(413, self._too_large(size))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _too_large(self, size: int) -> str:
        return (
            f"request body of {size} bytes is over this server's {self.max_body_bytes} bytes ({MAX_ROWS} utterances "
            f"of at most {self.max_text_chars} characters)"
        )


async def _answer(send: Send, status: int, message: str) -> None:
    payload = json.dumps({"error_code": "INVALID_PARAMETER_VALUE", "message": message}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_app() -> RequestLimits:
    """The served app (uvicorn --factory): the model from $INTENTOPS_SERVE_MODEL_URI, limits from the environment."""
    from mlflow.pyfunc import load_model, scoring_server

    model = load_model(os.environ[MODEL_URI_ENV])
    return RequestLimits(scoring_server.init(model), int(os.environ[MAX_TEXT_CHARS_ENV]))
