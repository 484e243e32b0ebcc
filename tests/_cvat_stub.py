"""A loopback stand-in for the few CVAT REST endpoints our CVAT paths call (127.0.0.1 only).

Responses carry the fields cvat-sdk's models require (the SDK parses them with those models);
request bodies are validated with cvat-sdk's own models (unknown keys refused too). Task backups
are real zip archives laid out as CVAT's ``TaskExporter`` writes them (``data/<file>``,
``data/manifest.jsonl``, ``task.json``, ``annotations.json``), served through the background-request
protocol cvat-sdk's ``download_backup`` speaks. Anything else answers 404 and is recorded, so a
test can assert that nothing unexpected (like a DELETE) was sent.
"""
from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import cvat_sdk.models as models
from cvat_sdk.api_client import Configuration, model_utils

DATE = "2026-01-01T00:00:00.000000Z"
UPDATED = "2026-01-02T00:00:00.000000Z"
TOKEN = "test-token"
NESTED = {"tracks": models.LabeledTrackRequest, "shapes": models.LabeledShapeRequest}


@dataclass
class StubTask:
    """A task as the stub serves it; ``frames`` are encoded images (PNG/JPEG bytes)."""

    id: int
    frames: list[bytes]
    width: int
    height: int
    chunk_type: str = "video"  # "video" (video task) or "imageset" (image task)
    labels: list[dict] = field(default_factory=lambda: [{"id": 7, "name": "sounding object", "type": "any"}])
    annotations: dict = field(default_factory=lambda: {"version": 0, "tags": [], "shapes": [], "tracks": []})
    start_frame: int = 0
    step: int = 1
    chunk_size: int = 72
    #: the uploaded video kept by CVAT (name, bytes) that backups carry; None: no media in backups
    upload: tuple[str, bytes] | None = None
    #: the manifest CVAT wrote for the upload (``data/manifest.jsonl``)
    manifest: str = ""
    #: a backup export that fails on the server with this message
    backup_error: str | None = None
    data_date: str = DATE

    def read(self) -> dict:
        return {"id": self.id, "name": f"task {self.id}", "url": f"/api/tasks/{self.id}", "size": len(self.frames),
                "mode": "interpolation" if self.chunk_type == "video" else "annotation", "status": "annotation",
                "created_date": DATE, "updated_date": UPDATED, "data_chunk_size": self.chunk_size,
                "data_original_chunk_type": self.chunk_type, "data_compressed_chunk_type": "imageset",
                "jobs": {"count": 1, "completed": 0, "validation": 0, "url": "/api/jobs"},
                "labels": {"url": f"/api/labels?task_id={self.id}"}, "organization": None, "data": 1,
                "dimension": "2d", "overlap": 0, "segment_size": len(self.frames), "subset": "", "owner": None,
                "assignee": None, "project_id": None, "source_storage": None, "target_storage": None}

    def meta(self) -> dict:
        count = len(self.frames)
        names = ["source.mp4"] if self.chunk_type == "video" else [f"frame_{i:06d}.jpg" for i in range(count)]
        stop = self.start_frame + (len(self.frames) - 1) * self.step
        return {"chunk_size": self.chunk_size, "size": len(self.frames), "image_quality": 70,
                "start_frame": self.start_frame, "stop_frame": stop,
                "frame_filter": f"step={self.step}" if self.step > 1 else "", "chunks_updated_date": self.data_date,
                "deleted_frames": [], "included_frames": None, "storage": "local", "storage_method": "cache",
                "frames": [{"width": self.width, "height": self.height, "name": n, "related_files": 0} for n in names]}


    def backup(self) -> bytes:
        """The task's backup archive, as CVAT's TaskExporter lays it out."""
        meta = self.meta()
        data = {key: meta[key] for key in ("chunk_size", "image_quality", "start_frame", "stop_frame",
                                           "storage_method", "storage", "deleted_frames")}
        data.update(chunk_type="imageset", sorting_method="lexicographical")
        if meta["frame_filter"]:
            data["frame_filter"] = meta["frame_filter"]
        manifest = {"name": f"task {self.id}", "bug_tracker": "", "status": "annotation", "subset": "",
                    "labels": [{"name": label["name"], "color": "#ff0000", "attributes": [], "type": label["type"],
                                "svg": "", "sublabels": []} for label in self.labels],
                    "version": "1.0", "data": data,
                    "jobs": [{"start_frame": 0, "stop_frame": len(self.frames) - 1, "status": "annotation",
                              "type": "annotation"}]}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:  # ZIP_STORED, as CVAT writes it
            if self.upload is not None:
                archive.writestr(f"data/{self.upload[0]}", self.upload[1])
            if self.manifest:
                archive.writestr("data/manifest.jsonl", self.manifest)
            archive.writestr("task.json", json.dumps(manifest))
            archive.writestr("annotations.json", json.dumps([self.annotations]))
        return buffer.getvalue()


class Stub:
    """Run with ``with Stub(task) as stub: ... stub.url``; ``stub.log`` lists (method, path, query)."""

    def __init__(self, *tasks: StubTask) -> None:
        self.tasks = {task.id: task for task in tasks}
        self.log: list[tuple[str, str, dict]] = []
        self.bodies: list[tuple[str, dict]] = []
        self.unexpected: list[str] = []
        self.backups: list[int] = []  # task ids whose backup was exported
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload, content_type: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if content_type == "application/zip" and "backup" in self.path:
                    self.send_header("Content-Disposition", 'attachment; filename="task_backup.zip"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                stub.log.append((method, parts.path.rstrip("/"), query))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"detail": "no token"})
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                try:
                    result = stub.serve(method, parts.path.rstrip("/"), query, body)
                except (ValueError, TypeError, KeyError) as err:
                    return self._send(400, {"detail": f"invalid request: {err}"})
                if result is None:
                    stub.unexpected.append(f"{method} {self.path}")
                    return self._send(404, {"detail": "not served by the stub"})
                self._send(*result)

            def do_GET(self):
                self._route("GET")

            def do_PATCH(self):
                self._route("PATCH")

            def do_PUT(self):
                self._route("PUT")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Stub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, method: str, path: str, query: dict, body):
        if method == "GET" and path == "/api/server/about":
            return 200, {"name": "CVAT", "description": "stub", "version": "2.80.0", "logo_url": "", "subtitle": ""}
        if method == "GET" and path == "/api/labels":
            task = self.tasks[int(query["task_id"])]
            labels = [dict(label, task_id=task.id, attributes=[], sublabels=[], color="#ff0000", has_parent=False)
                      for label in task.labels]
            return 200, {"count": len(labels), "next": None, "previous": None, "results": labels}
        if method == "GET" and path.startswith("/api/requests/"):
            return self._request(unquote(path[len("/api/requests/"):]))
        match = re.fullmatch(r"/api/tasks/(\d+)(/.*)?", path)
        if not match or int(match.group(1)) not in self.tasks:
            return None
        task, rest = self.tasks[int(match.group(1))], match.group(2) or ""
        if method == "GET" and rest == "":
            return 200, task.read()
        if method == "GET" and rest == "/data/meta":
            return 200, task.meta()
        if method == "GET" and rest == "/data" and query.get("type") == "frame":
            frame = task.frames[int(query["number"])]
            return 200, frame, "image/png" if frame.startswith(b"\x89PNG") else "image/jpeg"
        if method == "GET" and rest == "/data" and query.get("type") == "chunk":
            return 200, self._chunk(task, int(query["number"])), "application/zip"
        if rest == "/annotations":
            return self._annotations(task, method, query, body)
        if method == "POST" and rest == "/backup/export":
            self.backups.append(task.id)
            return 202, {"rq_id": f"export:task-{task.id}-backup-{len(self.backups)}"}
        if method == "GET" and rest == "/backup/download":
            return 200, task.backup(), "application/zip"
        return None

    def _request(self, rq_id: str):
        """A background request (``models.Request``): finished at once, or failed as the task says."""
        match = re.fullmatch(r"export:task-(\d+)-backup-\d+", rq_id)
        if not match or int(match.group(1)) not in self.tasks:
            return None
        task = self.tasks[int(match.group(1))]
        failed = task.backup_error is not None
        return 200, {"status": "failed" if failed else "finished", "id": rq_id, "message": task.backup_error or "",
                     "operation": {"type": "export:backup", "target": "task", "task_id": task.id, "project_id": None,
                                   "job_id": None, "format": None, "function_id": None, "lightweight": False},
                     "created_date": DATE, "started_date": DATE, "finished_date": DATE, "expiry_date": None,
                     "progress": 1.0, "owner": {"id": 1, "username": "admin"}, "result_id": None,
                     "result_url": None if failed else f"{self.url}/api/tasks/{task.id}/backup/download?rq_id={rq_id}"}

    def _chunk(self, task: StubTask, number: int) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for i, frame in enumerate(task.frames[number * task.chunk_size:(number + 1) * task.chunk_size]):
                archive.writestr(f"{number * task.chunk_size + i:06d}.jpg", frame)
        return buffer.getvalue()

    def _annotations(self, task: StubTask, method: str, query: dict, body):
        if method == "GET":
            return 200, task.annotations
        if method == "PATCH" and query.get("action") == "create":
            validate(body, models.PatchedLabeledDataRequest)
            self.bodies.append(("PATCH", body))
            for key in ("tags", "shapes", "tracks"):
                task.annotations[key] += [dict(item, id=len(task.annotations[key]) + i + 1)
                                          for i, item in enumerate(body.get(key, []))]
            return 200, task.annotations
        if method == "PUT":
            validate(body, models.LabeledDataRequest)
            self.bodies.append(("PUT", body))
            task.annotations = {"version": body.get("version", 0), "tags": body.get("tags", []),
                                "shapes": body.get("shapes", []), "tracks": body.get("tracks", [])}
            return 200, task.annotations
        return None


def validate(body: dict, model) -> None:
    """Deserialize with cvat-sdk's model (types, enums, required fields); refuse unknown keys."""
    model_utils.validate_and_convert_types(body, (model,), ["body"], True, True, Configuration())
    for key, nested in NESTED.items():
        for item in body.get(key, []):
            _known_keys(item, nested)
            for shape in item.get("shapes", []) if key == "tracks" else []:
                _known_keys(shape, models.TrackedShapeRequest)


def _known_keys(item: dict, model) -> None:
    unknown = set(item) - set(model.attribute_map)
    if unknown:
        raise ValueError(f"{model.__name__} has no {sorted(unknown)}")
