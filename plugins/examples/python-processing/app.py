"""A Bursar processing module written in Python.

It provisions servers through a small REST API (`api_url`, `api_token` in
the plan's module settings):

    GET    /api/ping                    200 when the token is good
    POST   /api/servers                 {"request_id", "hostname"} -> {"id", "state"}
    GET    /api/servers/{id}            {"id", "state", "ip", "password"}
    POST   /api/servers/{id}/suspend    200
    POST   /api/servers/{id}/resume     200
    DELETE /api/servers/{id}            204 (404 once gone)

`open` starts the install and answers `in-progress`; Bursar then calls
`poll` until the server is `active`. `prolong` needs no remote work. The operation id is sent as the
`request_id`, so a repeated `open` finds the server it started instead of
ordering a second one.

Build: `bash plugins/examples/python-processing/build.sh` (see docs/PLUGINS.md).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.exports import processing as p
from wit_world.imports import bursar_plugin_types as t
from wit_world.imports import host

import http_client

VERSION = "0.1.0"
POLL_AFTER_MS = 2000


def setting(settings, name):
    for key, value in settings:
        if key == name:
            return value
    raise Err(t.PluginError_InvalidConfig(f"the `{name}` setting is missing"))


def param(params, name):
    for key, value in params:
        if key == name:
            return value
    return None


def call(settings, method, path, body=None):
    """One API call: the decoded JSON answer, or the plugin error it means."""
    url = setting(settings, "api_url").rstrip("/") + path
    token = setting(settings, "api_token")
    try:
        status, data = http_client.request(method, url, token, body)
    except http_client.HttpError as e:
        raise Err(t.PluginError_Unavailable(t.Unavailable(str(e), None)))
    if status == 401 or status == 403:
        raise Err(t.PluginError_InvalidConfig(f"the API refused the token ({status})"))
    if status == 404:
        raise Err(t.PluginError_NotFound(f"{method} {path}: not found"))
    if status == 409 or status == 422:
        raise Err(t.PluginError_Rejected(f"{method} {path}: {status} {data[:200]!r}"))
    if status >= 500 or status == 429:
        raise Err(t.PluginError_Unavailable(t.Unavailable(f"{method} {path}: {status}", None)))
    if status >= 300:
        raise Err(t.PluginError_Internal(f"{method} {path}: unexpected {status}"))
    if not data:
        return {}
    try:
        return json.loads(data)
    except ValueError:
        raise Err(t.PluginError_Internal(f"{method} {path}: the answer is not JSON"))


def server_id(ctx):
    sid = param(ctx.service.params, "server_id")
    if sid is None:
        raise Err(t.PluginError_NotFound("the service has no server_id"))
    return sid


def progress_or_done(server):
    sid = str(server["id"])
    if server.get("state") == "active":
        return p.Outcome_Done(
            p.Done(
                [("server_id", sid), ("ip", str(server.get("ip", "")))],
                [("root_password", str(server.get("password", "")))],
            )
        )
    if server.get("state") == "failed":
        raise Err(t.PluginError_Rejected(f"the install of server {sid} failed"))
    return p.Outcome_InProgress(
        p.Progress(sid, POLL_AFTER_MS, f"server {sid}: {server.get('state', 'unknown')}")
    )


class Processing(wit_world.exports.Processing):
    def info(self):
        return t.PluginInfo("python-processing", VERSION, ["suspend", "resume", "close", "prolong"])

    def check_connection(self, settings):
        call(settings, "GET", "/api/ping")

    def catalog(self, settings):
        raise Err(t.PluginError_Unsupported("catalog"))

    def open(self, ctx):
        prefix = param(ctx.settings, "hostname_prefix") or "py"
        server = call(
            ctx.settings,
            "POST",
            "/api/servers",
            {"request_id": ctx.operation_id, "hostname": f"{prefix}-{ctx.service.id}"},
        )
        host.log(host.Level.INFO, f"server {server.get('id')} ordered for {ctx.service.id}")
        outcome = progress_or_done(server)
        if isinstance(outcome, p.Outcome_Done):
            outcome.value.params.append(("hostname", f"{prefix}-{ctx.service.id}"))
        return outcome

    def poll(self, ctx, remote_ref):
        outcome = progress_or_done(call(ctx.settings, "GET", f"/api/servers/{remote_ref}"))
        if isinstance(outcome, p.Outcome_Done):
            prefix = param(ctx.settings, "hostname_prefix") or "py"
            outcome.value.params.append(("hostname", f"{prefix}-{ctx.service.id}"))
        return outcome

    def suspend(self, ctx):
        call(ctx.settings, "POST", f"/api/servers/{server_id(ctx)}/suspend")
        return p.Outcome_Done(p.Done([], []))

    def resume(self, ctx):
        call(ctx.settings, "POST", f"/api/servers/{server_id(ctx)}/resume")
        return p.Outcome_Done(p.Done([], []))

    def close(self, ctx):
        try:
            call(ctx.settings, "DELETE", f"/api/servers/{server_id(ctx)}")
        except Err as e:
            # Gone already: closing again is not an error.
            if not isinstance(e.value, t.PluginError_NotFound):
                raise
        return p.Outcome_Done(p.Done([], []))

    def prolong(self, ctx):
        # Paid time is Bursar's business; the server has nothing to change.
        return p.Outcome_Done(p.Done([], []))

    def change_plan(self, ctx):
        raise Err(t.PluginError_Unsupported("change-plan"))

    def reinstall(self, ctx):
        raise Err(t.PluginError_Unsupported("reinstall"))
