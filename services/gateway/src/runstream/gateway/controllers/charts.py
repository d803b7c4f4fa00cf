"""Chart tasks: request one for a result, list a message's charts, read and cancel a task."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, post
from litestar.datastructures import ResponseHeader
from litestar.params import JSONBody

from runstream.gateway.dependencies import CommandsDep, GatewayDep, ModelsDep, OwnerDep
from runstream.gateway.openapi import API_SECURITY, READ, ApiOperation, errors
from runstream.gateway.ratelimit import WRITES
from runstream.gateway.schemas import (
    MAX_JSON_BYTES,
    ChartList,
    ChartRequest,
    ChartTask,
    ChartTaskAccepted,
    ChartTaskCancelled,
    MessageId,
    MinSeq,
    TaskId,
    load,
)


class ChartController(Controller):
    path = "/api"
    tags = ["charts"]
    security = API_SECURITY

    @post("/messages/{message_id:str}/charts", status_code=202, operation_class=ApiOperation,
          opt=WRITES, request_max_body_size=MAX_JSON_BYTES,
          response_headers=[ResponseHeader(name="Location", documentation_only=True,
                                           description="The chart task (a new one).")],
          responses=errors(400, 401, 404, 409, 413, 422, 429, 503))
    async def request_chart(
        self, commands: CommandsDep, message_id: MessageId,
        data: JSONBody[ChartRequest | None] = None,
    ) -> Response[ChartTaskAccepted]:
        """A chart of the message's result; an active task is reused unless `force_create`
        or an `adjustment_query` asks for a new one."""
        task = await commands.request_chart(message_id, data or ChartRequest())
        headers = {} if task.reused else {"Location": f"/api/charts/{task.task_id}"}
        return Response(task, status_code=202, headers=headers)

    @get("/messages/{message_id:str}/charts", operation_class=ApiOperation,
         responses=errors(*READ))
    async def list_charts(self, gateway: GatewayDep, models: ModelsDep, owner: OwnerDep,
                          message_id: MessageId) -> ChartList:
        await gateway.message_for(owner, message_id)
        return load(ChartList, await models.list_charts(message_id))

    @get("/charts/{task_id:str}", operation_class=ApiOperation, responses=errors(*READ))
    async def get_chart_task(self, gateway: GatewayDep, owner: OwnerDep, task_id: TaskId,
                             min_seq: MinSeq = 0) -> ChartTask:
        """The task: status, progress, current_step, step_progress, ETA, and its chart."""
        return load(ChartTask, await gateway.chart_task_for(owner, task_id, min_seq))

    @delete("/charts/{task_id:str}", status_code=202, operation_class=ApiOperation,
            responses=errors(401, 404, 409, 422, 503))
    async def cancel_chart(self, commands: CommandsDep, task_id: TaskId) -> ChartTaskCancelled:
        """Cancels the task (it stays readable, `cancelled`)."""
        return await commands.cancel_chart(task_id)
