"""Placeholder: the responses API's routes (being written)."""

from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from fusion.gateway.app import Gateway


def responses_routes(gateway: "Gateway") -> APIRouter:
    return APIRouter()
