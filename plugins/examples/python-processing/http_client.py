"""Blocking HTTP over `wasi:http/outgoing-handler`, for one call at a time.

`request` sends a body with its Content-Length and returns (status, bytes)
for every status: a 500 is an answer, not an exception. Only a request that
gets no answer (refused, not allowed by the instance's `allowed_hosts`,
timed out) raises `HttpError`.
"""

import json
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler
from wit_world.imports import wasi_http_types as h
from wit_world.imports.streams import StreamError_Closed

CHUNK = 4096
METHODS = {
    "GET": h.Method_Get,
    "POST": h.Method_Post,
    "PUT": h.Method_Put,
    "DELETE": h.Method_Delete,
}


class HttpError(Exception):
    pass


def request(method, url, token, body=None):
    parts = urlsplit(url)
    payload = b"" if body is None else json.dumps(body).encode()
    headers = [("accept", b"application/json"), ("authorization", f"Bearer {token}".encode())]
    if body is not None:
        headers.append(("content-type", b"application/json"))
        headers.append(("content-length", str(len(payload)).encode()))
    req = h.OutgoingRequest(h.Fields.from_list(headers))
    req.set_method(METHODS[method]())
    req.set_scheme(h.Scheme_Https() if parts.scheme == "https" else h.Scheme_Http())
    req.set_authority(parts.netloc)
    req.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else ""))
    out = req.body()
    if payload:
        stream = out.write()
        for i in range(0, len(payload), CHUNK):
            stream.blocking_write_and_flush(payload[i : i + CHUNK])
        stream.__exit__(None, None, None)
    try:
        future = outgoing_handler.handle(req, None)
    except Err as e:
        raise HttpError(f"{method} {url}: not sent ({e.value})")
    h.OutgoingBody.finish(out, None)
    future.subscribe().block()
    answer = future.get()
    if not isinstance(answer, Ok) or not isinstance(answer.value, Ok):
        error = answer.value.value if isinstance(answer, Ok) else answer
        raise HttpError(f"{method} {url}: no answer ({error})")
    response = answer.value.value
    incoming = response.consume()
    stream = incoming.stream()
    data = bytearray()
    while True:
        try:
            data += stream.blocking_read(16 * 1024)
        except Err as e:
            if isinstance(e.value, StreamError_Closed):
                break
            raise HttpError(f"{method} {url}: the answer broke off")
    stream.__exit__(None, None, None)
    return response.status(), bytes(data)
