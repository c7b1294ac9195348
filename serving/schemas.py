"""Request and response bodies of the HTTP service (`serving.app`)."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

Mode = Literal["retrieval", "llm", "llm-rank"]
MAX_QUERY_INPUT = 65_536  # characters accepted in a request's query (then cleaned and cut); longer: 422
QUERY_KEEP = 200  # characters kept after cleaning (Settings.max_query_chars may lower it further)
_SPACE = re.compile(r"\s+")


def clean_query(text: str, keep: int = QUERY_KEEP) -> str:
    """A user query made safe to embed and to quote in a prompt: control and format characters become spaces,
    whitespace collapses, and the result is cut to `keep` characters. Its meaning otherwise stays."""
    chars = [" " if unicodedata.category(c)[0] == "C" else c for c in text]
    return _SPACE.sub(" ", "".join(chars)).strip()[:keep].strip()


class RecommendationRequest(BaseModel):
    """One shopper's request: who, how many, and optionally what they are typing now and in which category."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user_id": "u000123", "k": 10, "query": "black leather ankle boots", "category": "Footwear",
         "mode": "retrieval"}]})

    user_id: StrictStr = Field(min_length=1, max_length=128, description="The shopper's id")
    k: StrictInt = Field(default=10, ge=1, le=100, description="How many items to return")
    query: StrictStr | None = Field(
        default=None, max_length=MAX_QUERY_INPUT,
        description=f"The search the user is typing now (control characters removed, cut to {QUERY_KEEP} "
                    "characters); default: the user's last search")
    category: StrictStr | None = Field(
        default=None, max_length=128,
        description="The category to recommend in; default: that of the typed query (its query memory's first "
                    "product), else of the user's last clicked or bought item")
    mode: Mode = Field(default="retrieval", description=(
        "retrieval: ID + title lists, mixup and the variant re-rank (fast). llm: the paper's path, the fine-tuned "
        "LLM generates an ID and title that query both lists. llm-rank: the LLM re-ranks the retrieval list's top "
        "candidates. LLM modes fall back to retrieval past their time budget."))

    @field_validator("query")
    @classmethod
    def _clean(cls, v: str | None) -> str | None:
        if v is None:
            return None
        return clean_query(v) or None

    @field_validator("user_id")
    @classmethod
    def _no_controls(cls, v: str) -> str:
        if any(unicodedata.category(c)[0] == "C" for c in v) or not v.strip():
            raise ValueError("user_id must be printable and not blank")
        return v


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[RecommendationRequest] = Field(min_length=1, max_length=256)


class Item(BaseModel):
    item_id: str
    title: str
    brand: str | None = None
    color: str | None = None
    size: str | None = None
    category: str
    score: float | None = Field(default=None, description="Higher is better; the final list's order score")
    source: str | None = Field(default=None, description=(
        "The source the item came from: memory (the query memory's products), search (the organic results of the "
        "user's recent searches), history (the user's own items), id (ID-embedding search), title (title-embedding "
        "search), variant (a colour/size sibling of those), llm (re-ordered by the LLM), popularity (no history and "
        "no query)"))


class Evidence(BaseModel):
    answered_from: Literal["history", "query", "popularity"] = Field(description=(
        "history: the user's sequence; query: no usable history, the query alone; popularity: neither, the "
        "category's most bought items"))
    history_items: list[str] = Field(default_factory=list, description="Clicked/bought items used, oldest first")
    query_used: str | None = None
    memory_queries: list[str] = Field(default_factory=list, description="Stored queries the memory matched")
    category_from: Literal["request", "history", "query", "popularity"]


class LLMInfo(BaseModel):
    model: str
    prompt_version: str
    generated_text: str | None = None
    generated_item_id: str | None = None
    generated_title: str | None = None
    well_formed: bool | None = None
    candidates: list[str] = Field(default_factory=list)
    reordered_by: str | None = Field(None, description="llm-rank: `ranker-llm` (the second pass over the LLM's "
                                     "letter scores and the ranker's), `letters` (the letter scores alone), or "
                                     "`ranker` (the second pass kept the ranker's order, so the LLM was not asked)")


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: str
    category: str
    mode: Mode = Field(description="The mode that served this answer")
    requested_mode: Mode
    fallback_reason: str | None = Field(default=None, description="Why an LLM mode was served by retrieval")
    items: list[Item]
    evidence: Evidence
    llm: LLMInfo | None = None
    models: dict[str, str]
    timings_ms: dict[str, float]


class BatchResponse(BaseModel):
    request_id: str
    responses: list[RecommendationResponse]


class HistoryEvent(BaseModel):
    action: str
    timestamp: str | None
    item: Item | None = None
    query: str | None = None


class HistoryResponse(BaseModel):
    user_id: str
    events: list[HistoryEvent]


class Problem(BaseModel):
    """An error answer."""

    detail: str | list
    request_id: str | None = None
