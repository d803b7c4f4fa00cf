"""One controller per resource; none imports another."""

from runstream.gateway.controllers.analyses import AnalysisController
from runstream.gateway.controllers.charts import ChartController
from runstream.gateway.controllers.datasets import DatasetController
from runstream.gateway.controllers.ops import OpsController
from runstream.gateway.controllers.sessions import SessionController
from runstream.gateway.controllers.streams import StreamController
from runstream.gateway.controllers.tokens import TokenController

CONTROLLERS = [SessionController, DatasetController, AnalysisController, ChartController,
               StreamController, TokenController, OpsController]

__all__ = ["CONTROLLERS"]
