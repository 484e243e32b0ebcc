"""Talking to a CVAT server from the CLI: every failure to reach it, authenticate with it or be
served by it becomes one :class:`AuralSAM2Error` line that names the server and what to do.

Server options are cvat-cli's own (``--server-host``, ``--server-port``, ``--auth USER[:PASS]`` or
``CVAT_ACCESS_TOKEN``, ``--organization``, ``--profile``), parsed by cvat-sdk.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import urllib3.exceptions as http
from cvat_sdk.api_client import exceptions as api
from cvat_sdk.core.exceptions import AuthStoreError, InvalidHostException
from cvat_sdk.core.utils import normalize_server_url

from ..core.errors import AuralSAM2Error

CREDENTIALS_HINT = "check --auth USER[:PASS] (or PASS), CVAT_ACCESS_TOKEN or --profile"
SERVER_HINT = "check --server-host/--server-port (or --profile) and that the server is running"
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
BODY_EXCERPT = 200
URLLIB3_POOL_LOGGER = "urllib3.connectionpool"
#: where cvat-sdk's model checks place a reply that does not parse (``path_to_item[0]``)
REPLY_ITEM = "received_data"


def server_name(args: argparse.Namespace) -> str:
    """The server the arguments point at, as a user would recognise it."""
    host = getattr(args, "server_host", None)
    port = getattr(args, "server_port", None)
    if host:
        try:
            url = normalize_server_url(host)
        except InvalidHostException:
            return host
        return f"{url}:{port}" if port else url
    if getattr(args, "profile", None):
        return f"the server of profile {args.profile!r}"
    return "the default CVAT server (your default cvat-cli profile, or http://localhost)"


def _reason(error: BaseException | None) -> str:
    if isinstance(error, http.NameResolutionError):
        return "host name not found"
    found = _ERRNO_TEXT.search(str(error))
    if found:  # e.g. connection refused (urllib3 files NewConnectionError under ConnectTimeoutError)
        return found.group(1).strip().lower()
    if isinstance(error, (http.ConnectTimeoutError, http.ReadTimeoutError)):
        return "timed out"
    return " ".join(str(error).split())[:BODY_EXCERPT]


def _unreachable(error: http.MaxRetryError, server: str) -> AuralSAM2Error:
    pool = error.pool
    if pool is not None and getattr(pool, "host", None):
        server = f"{pool.scheme}://{pool.host}:{pool.port}"
    if isinstance(error.reason, http.SSLError):
        return AuralSAM2Error(f"the TLS connection to CVAT at {server} failed ({_reason(error.reason)})",
                              "use http:// if the server has no TLS, or --insecure for a self-signed certificate")
    return AuralSAM2Error(f"cannot reach CVAT at {server} ({_reason(error.reason)})", SERVER_HINT)


def _detail(error: api.ApiException) -> str:
    body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else str(error.body or "")
    try:
        parsed = json.loads(body)
        body = parsed.get("detail", body) if isinstance(parsed, dict) else body
    except ValueError:
        pass
    return " ".join(str(body).split())[:BODY_EXCERPT]


def _answered(error: api.ApiException, server: str) -> AuralSAM2Error:
    status, detail = error.status, _detail(error)
    said = f" ({status}: {detail})" if detail else f" ({status})"
    if status == 401 or (status == 400 and "log in" in detail.lower()):
        return AuralSAM2Error(f"CVAT at {server} did not accept the credentials{said}", CREDENTIALS_HINT)
    if status == 403:
        return AuralSAM2Error(f"CVAT at {server} refused access{said}",
                              "ask the task's owner for access, or check --organization")
    if status is not None and status >= 500:
        return AuralSAM2Error(f"CVAT at {server} failed{said}", "try again, or look at the server's logs")
    return AuralSAM2Error(f"CVAT at {server} answered {status} {error.reason}" + (f": {detail}" if detail else ""))


@contextmanager
def server_errors(server: str) -> Iterator[None]:
    """Turn what cvat-sdk and urllib3 raise while talking to ``server`` into one-line errors
    (and keep urllib3's per-retry warnings off the terminal: the error line says it all)."""
    pool_log = logging.getLogger(URLLIB3_POOL_LOGGER)
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        yield
    except http.MaxRetryError as err:
        raise _unreachable(err, server) from err
    except http.HTTPError as err:  # the connection broke after it was made
        raise AuralSAM2Error(f"lost the connection to CVAT at {server} ({_reason(err)})",
                             "check that the server is up, then try again") from err
    except api.ApiException as err:
        raise _answered(err, server) from err
    except api.OpenApiException as err:
        if (getattr(err, "path_to_item", None) or [None])[0] != REPLY_ITEM:
            raise  # a request this program built wrongly: a bug, not the server's doing
        said = " ".join(str(err).split())[:BODY_EXCERPT]
        raise AuralSAM2Error(f"{server} did not answer like a CVAT server ({said})", SERVER_HINT) from err
    except InvalidHostException as err:
        raise AuralSAM2Error(str(err), "write --server-host as host, http://host or https://host") from err
    except AuthStoreError as err:
        raise AuralSAM2Error(str(err), "see 'cvat-cli profile --help'") from err
    except EOFError as err:  # getpass with no terminal and nothing on stdin
        raise AuralSAM2Error(f"no password was given for CVAT at {server}", CREDENTIALS_HINT) from err
    finally:
        pool_log.setLevel(level)


__all__ = ["server_errors", "server_name"]
