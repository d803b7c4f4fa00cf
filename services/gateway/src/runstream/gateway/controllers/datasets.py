"""A session's datasets: upload (CSV or Parquet, streamed) and list."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.params import QueryParameter

from runstream.gateway.dependencies import CommandsDep, GatewayDep, ModelsDep, OwnerDep, SettingsDep
from runstream.gateway.errors import ApiError
from runstream.gateway.openapi import API_SECURITY, READ, ApiOperation, UploadOperation, errors
from runstream.gateway.ratelimit import WRITES
from runstream.gateway.schemas import (
    NAME_MAX_CHARS,
    NOT_BLANK,
    DatasetCreated,
    DatasetList,
    SessionId,
    load,
)

DatasetName = Annotated[str, QueryParameter(
    min_length=1, max_length=NAME_MAX_CHARS, pattern=NOT_BLANK,
    description="The dataset's name in the session.")]
Format = Annotated[str, QueryParameter(
    name="format", pattern=r"^(csv|parquet)?$",
    description="`csv` or `parquet`; by default told by the Parquet magic bytes, else "
    "the Content-Type.")]


class DatasetController(Controller):
    path = "/api/sessions/{session_id:str}/datasets"
    tags = ["datasets"]
    security = API_SECURITY

    # The body is streamed and counted here, against RUNSTREAM_DATASET_MAX_BYTES (the app's
    # body limit is that too): a too-large upload is refused without being held in memory.
    @post("/", status_code=201, operation_class=UploadOperation, opt=WRITES,
          responses=errors(401, 404, 413, 422, 429, 503))
    async def upload_dataset(
        self, request: Request[Any, Any, Any], commands: CommandsDep, gateway: GatewayDep,
        settings: SettingsDep, owner: OwnerDep, session_id: SessionId,
        name: DatasetName = "dataset", fmt: Format = "",
    ) -> Response[DatasetCreated]:
        """Attaches a CSV or Parquet file to the session; answers its schema and sample."""
        await gateway.session_for(owner, session_id)
        limit = settings.dataset_max_bytes
        too_large = ApiError(413, "payload_too_large", f"datasets are limited to {limit} bytes",
                             {"limit": limit})
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        created = await commands.attach_dataset(
            session_id, b"".join(chunks), name=name, declared=fmt or None,
            content_type=request.headers.get("content-type"))
        return Response(created, status_code=201)

    @get("/", operation_class=ApiOperation, responses=errors(*READ))
    async def list_datasets(self, gateway: GatewayDep, models: ModelsDep, owner: OwnerDep,
                            session_id: SessionId) -> DatasetList:
        await gateway.session_for(owner, session_id)
        return load(DatasetList, {"datasets": await models.list_datasets(session_id)})
