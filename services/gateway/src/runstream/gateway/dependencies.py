"""What handlers receive through `Provide`: the gateway state, the owner, the bus, the
read models and the write side (`Commands`)."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.types import Scope

from runstream.bus import Bus
from runstream.gateway.commands import Commands
from runstream.gateway.settings import GatewaySettings
from runstream.gateway.state import Gateway, gateway_of
from runstream.store import ReadModels

GatewayDep = NamedDependency[Gateway]
OwnerDep = NamedDependency[str]
SettingsDep = NamedDependency[GatewaySettings]
BusDep = NamedDependency[Bus]
ModelsDep = NamedDependency[ReadModels]
CommandsDep = NamedDependency[Commands]


def provide_gateway(state: State) -> Gateway:
    """The state built by the lifespan; 503 while the gateway starts or stops."""
    return gateway_of(state)


def provide_owner(scope: Scope) -> str:
    """The token's subject (the auth middleware has verified it)."""
    return str(scope.get("user"))


def provide_settings(gateway: GatewayDep) -> GatewaySettings:
    return gateway.settings


def provide_bus(gateway: GatewayDep) -> Bus:
    return gateway.bus


def provide_models(gateway: GatewayDep) -> ReadModels:
    return gateway.models


def provide_commands(state: State, scope: Scope) -> Commands:
    """From the state and the scope directly, not from `gateway` and `owner`: a handler
    that needs only `commands` then resolves one dependency, and Litestar starts no task
    group (two tasks) to resolve a level of two."""
    return Commands(gateway_of(state), str(scope.get("user")))


DEPENDENCIES: dict[str, Any] = {
    "gateway": Provide(provide_gateway, sync_to_thread=False),
    "owner": Provide(provide_owner, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "bus": Provide(provide_bus, sync_to_thread=False),
    "models": Provide(provide_models, sync_to_thread=False),
    "commands": Provide(provide_commands, sync_to_thread=False),
}
