"""Recommendation prompts (Liu et al., "Sequential LLM Framework for Fashion Recommendation", section 4.2).

One module builds every prompt, for training, evaluation and serving, so a prompt is defined once:
- **Instruction** (the system message): the task description, the execution requirement (keep the sequential order,
  attend to attributes that vary between the items a shopper compares (C2), weigh season and occasion (C3), prefer
  the top exposure results of the shopper's searches (C4)) and a strict format indicator.
- **Input** (the user message): the shopper's time-ordered actions, each item with its attributes as key-value
  pairs, the search queries, and for each search the query-product memory's top products.
- **Response** (the assistant message, training only): the purchased item's ID and title, in the indicated format.

The chat template of the tokenizer renders the messages, so the roles are delimited by the model's own special
tokens. User text (queries, titles) is sanitised by `quote`: control characters, the template's special-token
markers, `#`, backticks and quotes are removed, whitespace is collapsed, the length is capped, and the result is
quoted, so no query can rewrite the instruction or the answer's format. A prompt keeps to `budget` tokens by
dropping the OLDEST events first (deterministically, whole events at a time); the instruction and the response are
never cut. Every segment can be switched off for ablations (`PromptConfig`).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pandas as pd

PROMPT_VERSION = "rec-prompt-v2"  # v2: compact candidate prompts (v1: `full` candidate lines)
ID_KEY, TITLE_KEY = "ID", "Title"

TASK = ("You are a fashion e-commerce recommender. From a shopper's time-ordered searches, clicks and purchases, "
        "predict the one product the shopper will purchase next.")
REQUIREMENT = ("Read the actions in their order: later actions matter more. Notice which attributes vary between "
               "the items the shopper compares (colour, size, brand) and which stay fixed: they reveal the exact "
               "preference. Weigh the season and the occasion. Shoppers mostly buy from the top results of their "
               "own searches: prefer those products.")
FORMAT = (f"Answer with exactly two lines and nothing else:\n{ID_KEY}: <product id>\n{TITLE_KEY}: <product title>")
CANDIDATE_FORMAT = "Answer with the letter of one candidate and nothing else."
LETTERS = "ABCDEFGHIJKLMNOPQRST"  # 20 candidates, each letter a single token (checked by `letter_token_ids`)

_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?INST\]|<<SYS>>|<</SYS>>")
_DROP = re.compile(r"[#`\"'<>{}\\|]")


def quote(text: object, max_chars: int = 64) -> str:
    """User or catalog text made inert: printable, no template markers or format characters, capped, quoted."""
    s = unicodedata.normalize("NFKC", str(text))
    s = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in s)  # control / format characters
    s = _DROP.sub(" ", _SPECIAL.sub(" ", s))
    s = re.sub(r"(?i)\b(id|title)\s*:", r"\1 ", s)  # "ID:" / "Title:" cannot appear inside user text
    s = " ".join(s.split())[:max_chars].strip()
    return f'"{s}"'


class ItemTable(Protocol):
    """What prompts read about items: attributes by item id."""

    def get(self, item_id: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class Action:
    """One past action of the shopper."""

    action: str  # search | click | purchase
    item_id: str | None = None
    query: str | None = None


@dataclass(frozen=True)
class PromptInput:
    """Everything a prompt says about one shopper: actions oldest first and the memory's products per query."""

    actions: tuple[Action, ...]
    memory: Mapping[str, Sequence[str]] = field(default_factory=dict)  # query text -> top product ids
    category: str | None = None  # the category to recommend in, when known


@dataclass(frozen=True)
class LLMLimits:
    """The LLM stage's sizes, the same for fine-tuning, evaluation and serving (`LIMITS`)."""

    candidates: int = 20  # lettered candidates in a candidate prompt (LETTERS has 20)
    budget_tokens: int = 1024  # tokens of a whole rendered prompt
    max_new_tokens: int = 40  # generated tokens: an ID and a title fit (the paper's benchmark uses 64)


LIMITS = LLMLimits()


@dataclass(frozen=True)
class PromptConfig:
    """Segments, budget and sanitising; the `include_*` switches are the ablations."""

    budget: int = LIMITS.budget_tokens  # tokens of the whole rendered prompt (with the response in training)
    attributes: tuple[str, ...] = ("title", "brand", "color", "size", "material", "season", "occasion")
    include_requirement: bool = True
    include_attributes: bool = True  # False: items appear by ID only
    include_queries: bool = True  # False: search actions are left out
    include_memory: bool = True  # False: no memory products after the searches
    memory_products: int = 3
    max_query_chars: int = 64
    max_value_chars: int = 48
    max_actions: int = 50
    # Candidate lines: "full" = `<id> (title: "...", brand: "...", color: "...", size: "...")`; "compact" =
    # `<title> | <color> | <size>` (the letter names the candidate; the brand only when the title lacks it): about
    # half the tokens of a candidate prompt, which is most of its cost (benchmarks/llm_runtime.py).
    candidate_style: str = "compact"


def instruction(cfg: PromptConfig, candidates: bool = False) -> str:
    """The system message: task, execution requirement, format indicator."""
    parts = [TASK] + ([REQUIREMENT] if cfg.include_requirement else [])
    parts.append(CANDIDATE_FORMAT if candidates else FORMAT)
    return "\n".join(parts)


def describe_item(item_id: str, items: ItemTable, cfg: PromptConfig) -> str:
    """`<id> (key: "value", ...)` with the configured attributes, or the ID alone."""
    attrs = items.get(item_id) if cfg.include_attributes else None
    if not attrs:
        return str(item_id)
    pairs = [f"{k}: {quote(attrs[k], cfg.max_value_chars)}" for k in cfg.attributes
             if k in attrs and attrs[k] is not None and str(attrs[k]).strip()]
    return f"{item_id} ({', '.join(pairs)})" if pairs else str(item_id)


def action_lines(inp: PromptInput, items: ItemTable, cfg: PromptConfig, compact: bool = False) -> list[str]:
    """One line per kept action, oldest first (searches dropped when `include_queries` is off). `compact`: items as
    `compact_item` lines without IDs (a compact candidate prompt names its candidates by letter, so IDs would only
    cost tokens)."""
    def item(i: str, c: PromptConfig) -> str:
        return compact_item(i, items, c) if compact else describe_item(i, items, c)

    lines = []
    for a in inp.actions[-cfg.max_actions:] if cfg.max_actions else inp.actions:
        if a.action == "search":
            if not cfg.include_queries or not a.query:
                continue
            line = f"search {quote(a.query, cfg.max_query_chars)}"
            top = list(inp.memory.get(a.query, ()))[: cfg.memory_products] if cfg.include_memory else []
            if top:
                line += " -> top products: " + "; ".join(item(i, replace(cfg, attributes=("title",))) for i in top)
            lines.append(line)
        elif a.item_id:
            lines.append(f"{a.action} {item(a.item_id, cfg)}")
    return lines


def user_message(lines: Sequence[str], inp: PromptInput, cfg: PromptConfig, candidates: str = "") -> str:
    head = "Shopper's actions, oldest first:" if lines else "The shopper has no past actions."
    body = "\n".join(f"{i}. {line}" for i, line in enumerate(lines, start=1))
    tail = f"\nRecommend a product in the category {quote(inp.category, cfg.max_value_chars)}." if inp.category else ""
    return f"{head}\n{body}{tail}{candidates}".rstrip()


def response_text(item_id: str, title: str) -> str:
    """The response segment: the format indicator's two lines."""
    return f"{ID_KEY}: {item_id}\n{TITLE_KEY}: {' '.join(str(title).split())}"


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: list[dict], **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt: `text` ends where the model's answer starts; `response` is appended in training."""

    text: str
    response: str | None
    n_tokens: int  # of text + response
    n_actions: int  # actions kept after truncation
    n_dropped: int  # oldest actions dropped to fit the budget
    version: str = PROMPT_VERSION


def render(tokenizer: ChatTokenizer, system: str, user: str) -> str:
    """The chat-template text up to the assistant's answer."""
    return tokenizer.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                         tokenize=False, add_generation_prompt=True)


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_prompt(inp: PromptInput, items: ItemTable, tokenizer: Any, cfg: PromptConfig = PromptConfig(),
                 response: tuple[str, str] | str | None = None, candidates: str = "") -> Prompt:
    """Render one prompt within `cfg.budget` tokens, dropping the oldest actions first (see the module docstring).

    `response`: (item id, title) for a generation prompt, a letter for a candidate prompt (`candidates` holds the
    `candidate_block`), None at prediction time.
    """
    lines = action_lines(inp, items, cfg, compact=bool(candidates) and cfg.candidate_style == "compact")
    system = instruction(cfg, candidates=bool(candidates))
    answer = response if isinstance(response, str) else (response_text(*response) if response else None)
    eos = getattr(tokenizer, "eos_token", None) or ""

    def size(k: int) -> tuple[str, int]:  # keep the last len(lines) - k lines
        text = render(tokenizer, system, user_message(lines[k:], inp, cfg, candidates))
        return text, count_tokens(tokenizer, text + (answer + eos if answer else ""))

    text, n = size(0)
    dropped = 0
    if n > cfg.budget:  # smallest k that fits: binary search (token counts fall as lines are dropped)
        lo, hi = 1, len(lines)
        while lo < hi:
            mid = (lo + hi) // 2
            if size(mid)[1] <= cfg.budget:
                hi = mid
            else:
                lo = mid + 1
        dropped = lo
        text, n = size(dropped)
    return Prompt(text=text, response=answer, n_tokens=n, n_actions=len(lines) - dropped, n_dropped=dropped)


# ---------------------------------------------------------------------------------------------------------------
# Parsing the answer

# The keys are case-sensitive: the prompt's own attribute keys are lower case ("title: ..."), and a model that echoes
# its input must not have those lines read as its answer.
_ID_LINE = re.compile(rf"^\s*{ID_KEY}\s*:\s*(\S+)\s*$")
_TITLE_LINE = re.compile(rf"^\s*{TITLE_KEY}\s*:\s*(.*\S)\s*$")
_ID_ANY = re.compile(rf"\b{ID_KEY}[ \t]*\**[ \t]*[:=][ \t]*\**[ \t]*([A-Za-z0-9][A-Za-z0-9_.\-]*)")
_TITLE_ANY = re.compile(rf"\b{TITLE_KEY}[ \t]*\**[ \t]*[:=][ \t]*\**[ \t]*([^\n]*\S)")


@dataclass(frozen=True)
class ParsedAnswer:
    """What a generated answer says. `well_formed`: exactly the two lines of the format indicator (after
    stripping surrounding blank lines); `item_id`/`title`: the first ones found even in a malformed answer."""

    item_id: str | None
    title: str | None
    well_formed: bool


def parse_answer(text: str) -> ParsedAnswer:
    """Parse a generated answer leniently, and say whether it kept the format strictly."""
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    strict = len(lines) == 2 and _ID_LINE.match(lines[0]) and _TITLE_LINE.match(lines[1])
    if strict:
        return ParsedAnswer(_ID_LINE.match(lines[0]).group(1), _TITLE_LINE.match(lines[1]).group(1).strip(), True)  # type: ignore[union-attr]
    m_id, m_title = _ID_ANY.search(str(text)), _TITLE_ANY.search(str(text))
    title = m_title.group(1).strip().strip("*").strip() if m_title else None
    return ParsedAnswer(m_id.group(1).rstrip(".") if m_id else None, title or None, False)


CANDIDATE_ATTRIBUTES = ("title", "brand", "color", "size")  # shorter than the history's: 20 of them fit the budget


def candidate_block(candidates: Sequence[str], items: ItemTable, cfg: PromptConfig,
                    attributes: tuple[str, ...] = CANDIDATE_ATTRIBUTES) -> str:
    """The lettered candidate list appended to the input for candidate scoring."""
    if len(candidates) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} candidates, got {len(candidates)}")
    if cfg.candidate_style not in CANDIDATE_STYLES:
        raise ValueError(f"unknown candidate_style {cfg.candidate_style!r}: one of {', '.join(CANDIDATE_STYLES)}")
    if cfg.candidate_style == "compact":
        rows = [f"{LETTERS[i]}. {compact_item(c, items, cfg)}" for i, c in enumerate(candidates)]
    else:
        short = replace(cfg, attributes=attributes)
        rows = [f"{LETTERS[i]}. {describe_item(c, items, short)}" for i, c in enumerate(candidates)]
    return "\nCandidates:\n" + "\n".join(rows)


CANDIDATE_STYLES = ("full", "compact")


def compact_item(item_id: str, items: ItemTable, cfg: PromptConfig) -> str:
    """`<title> | <color> | <size>`, sanitised like every catalog value (the brand first when the title lacks it);
    the ID alone when the item has no title."""
    attrs = items.get(item_id) if cfg.include_attributes else None
    if not attrs or not str(attrs.get("title") or "").strip():
        return str(item_id)
    title = quote(attrs["title"], cfg.max_value_chars)[1:-1]
    brand = quote(attrs.get("brand") or "", cfg.max_value_chars)[1:-1]
    if brand and brand.lower() not in title.lower():
        title = f"{brand} {title}"
    rest = [quote(attrs[k], cfg.max_value_chars)[1:-1] for k in ("color", "size")
            if attrs.get(k) is not None and str(attrs[k]).strip()]
    return " | ".join([title, *rest])


ITEM_FIELDS = ("title", "brand", "color", "size", "material", "season", "occasion", "category", "family_id")


def display_order(user: str, n: int, p: int = 0, seed: int = 0) -> np.ndarray:
    """The p-th display order of n candidates for a user: a seeded shuffle, the same in every process (the user's
    key is a CRC32, not Python's per-process salted `hash`), so serving shows what the evaluation showed."""
    return np.random.default_rng([seed, p, zlib.crc32(user.encode("utf-8"))]).permutation(n)


class CatalogItems:
    """Item attributes by id (the `ItemTable` prompts read)."""

    def __init__(self, items: pd.DataFrame) -> None:
        cols = [c for c in ITEM_FIELDS if c in items]
        self._rows: dict[str, dict] = items.set_index("item_id")[cols].to_dict(orient="index")

    def get(self, item_id: str) -> Mapping[str, Any] | None:
        return self._rows.get(item_id)

    def title(self, item_id: str) -> str:
        row = self._rows.get(item_id)
        return str(row.get("title", "")) if row else ""
