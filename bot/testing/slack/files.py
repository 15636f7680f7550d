"""File uploads, Slack's v2 flow: getUploadURLExternal, the bytes POSTed, completeUploadExternal."""

from __future__ import annotations

import time

from aiohttp import web

from bot.testing.slack.faults import FaultsMixin
from bot.testing.slack.params import param_json, param_str
from bot.testing.slack.records import (
    ApiCall,
    JSONDict,
    SlackApiFailure,
    Upload,
)


class FilesMixin(FaultsMixin):
    """Hands out upload URLs, takes the bytes and shares completed files."""

    def _files_get_upload_url(self, params: JSONDict) -> JSONDict:
        filename = param_str(params, "filename")
        length = param_str(params, "length")
        if not filename or not length or not length.isdigit():
            raise SlackApiFailure("invalid_arguments", "filename and a numeric length required")
        file_id = self._new_id("F")
        self.uploads[file_id] = Upload(file_id=file_id, filename=filename, length=int(length))
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        data = await request.read()
        params: JSONDict = {"file_id": file_id, "bytes": len(data)}
        fault = self._take_fault("upload")
        if fault is not None:
            return self._apply_fault(request, "upload", params, fault)
        upload = self.uploads.get(file_id)
        if upload is None:
            self.calls.append(ApiCall("upload", params, False, time.time()))
            return web.Response(status=404, text="file_not_found")
        upload.data = data
        self.calls.append(ApiCall("upload", params, True, time.time()))
        return web.Response(text=f"OK - {len(data)}")

    def _files_complete_upload(self, params: JSONDict) -> JSONDict:
        entries = param_json(params, "files", None)
        if not isinstance(entries, list) or not entries:
            raise SlackApiFailure("invalid_arguments", "files: must be a non-empty list")
        channel_id = param_str(params, "channel_id") or param_str(params, "channels")
        channel_id = channel_id.split(",")[0] if channel_id else None
        if channel_id:
            channel_id = self._writable_channel(channel_id).id
        completed = []
        for entry in entries:
            upload = self.uploads.get(entry.get("id", "")) if isinstance(entry, dict) else None
            if upload is None:
                raise SlackApiFailure("file_not_found", f"unknown file {entry!r}")
            if upload.data is None:
                raise SlackApiFailure("file_upload_not_completed", f"{upload.file_id} not sent")
            upload.title = entry.get("title") or upload.filename
            upload.channel_id = channel_id
            upload.thread_ts = param_str(params, "thread_ts")
            upload.initial_comment = param_str(params, "initial_comment")
            upload.completed = True
            upload.completed_at = time.time()
            completed.append(
                {
                    "id": upload.file_id,
                    "name": upload.filename,
                    "title": upload.title,
                    "size": len(upload.data),
                    "channels": [channel_id] if channel_id else [],
                }
            )
        return {"files": completed}
