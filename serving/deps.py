"""`Depends` aliases: a route's signature says what it reads (the loaded service, the settings)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.config import Settings
from serving.service import RecommendationService


async def get_service(request: Request) -> RecommendationService:
    """The service the lifespan hook loaded."""
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


ServiceDep = Annotated[RecommendationService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
