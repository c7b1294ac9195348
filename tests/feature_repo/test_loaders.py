"""Loaders for the real datasets: exact mappings on tiny handwritten fixtures, and counts/invariants on the real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.ingest import validate
from feature_repo.loaders import load_with_info
from feature_repo.loaders.amazon2018 import (
    iter_json_objects,
    load_amazon2018,
    load_amazon2018_with_report,
    parse_style,
)
from feature_repo.loaders.hm import HM_DATASET_START, load_hm, load_hm_with_report
from feature_repo.moments import infer_resolution
from feature_repo.schema import SCHEMAS, CanonicalTables, to_arrow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HM_DIR = DATA / "real" / "hm"
AMAZON_FILE = DATA / "real" / "amazon_fashion5" / "AMAZON_FASHION_5.json"
needs_real = pytest.mark.skipif(
    not (HM_DIR.is_dir() and AMAZON_FILE.is_file()),
    reason=f"real datasets not found under {DATA / 'real'} (shared data checkout absent)",
)


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def assert_canonical(tables: CanonicalTables) -> None:
    for name, df in tables.as_dict().items():
        assert list(df.columns) == SCHEMAS[name].names, name
        assert to_arrow(df, name).num_rows == len(df)


def assert_days_in_order_per_user(events: pd.DataFrame) -> None:
    """Timestamps are whole days (no tie-break offsets), non-decreasing per user."""
    assert (events["timestamp"] == events["timestamp"].dt.floor("D")).all()
    step = events.groupby("user_id", sort=False)["timestamp"].diff().dropna()
    assert (step >= pd.Timedelta(0)).all()


# --- tiny fixtures -----------------------------------------------------------------------------------------------

_ARTICLE_FIELDS = [
    "article_id", "prod_name", "product_type_name", "product_group_name", "colour_group_name",
    "index_group_name", "section_name",
]  # fmt: skip
_ARTICLES = [
    ("0100000001", "Basic top", "Top", "Garment Upper body", "Black", "Ladieswear", "Womens Casual"),
    ("0100000002", "Runner", "Sneakers", "Shoes", "White", "Menswear", "Men Shoes"),
    ("0200000001", "Cargo", "Trousers", "Garment Lower body", "Dark Blue", "Baby/Children", "Kids Boy"),
    ("0300000001", "Tote", "Bag", "Accessories", "Beige", "Divided", "Divided Collection"),
    ("0300000002", "Run tee", "T-shirt", "Garment Upper body", "Grey", "Sport", "Ladies H&M Sport"),
]
_TRANSACTIONS = """t_dat,customer_id,article_id,price,sales_channel_id
2019-01-01,u1,0100000001,0.02,2
2019-01-01,u2,0100000002,0.05,1
2019-01-01,u1,0100000002,0.04,2
2019-01-01,u1,0100000001,0.02,2
2019-01-03,u1,0200000001,0.01,1
2019-01-02,u2,0100000001,0.03,1
"""


@pytest.fixture
def hm_dir(tmp_path: Path) -> Path:
    """articles.csv holds the purchased articles; the numeric-id catalog parquet lacks 0200000001 on purpose."""
    (tmp_path / "transactions.csv").write_text(_TRANSACTIONS)
    with open(tmp_path / "articles.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*_ARTICLE_FIELDS, "detail_desc"])
        w.writerows([[*a, "a long description"] for a in _ARTICLES[:3]])
    full = pd.DataFrame([a for a in _ARTICLES if a[0] != "0200000001"], columns=_ARTICLE_FIELDS)
    full["article_id"] = full["article_id"].astype("int64")
    full.to_parquet(tmp_path / "articles_full_catalog.parquet")
    return tmp_path


def test_hm_fixture_events_exact(hm_dir: Path) -> None:
    tables, report = load_hm_with_report(hm_dir)
    got = list(
        tables.events[["user_id", "item_id", "timestamp", "session_id"]].itertuples(index=False, name=None)
    )
    assert got == [
        ("u1", "0100000001", ts("2019-01-01"), 1),
        ("u1", "0100000002", ts("2019-01-01"), 1),  # same day: the same moment, file order
        ("u1", "0100000001", ts("2019-01-01"), 1),  # repeated row passed through (ingest quarantines it)
        ("u1", "0200000001", ts("2019-01-03"), 4),
        ("u2", "0100000002", ts("2019-01-01 00:00:00"), 2),
        ("u2", "0100000001", ts("2019-01-02 00:00:00"), 3),
    ]
    assert (tables.events["action"] == "purchase").all()
    assert tables.events["query"].isna().all() and tables.events["search_id"].isna().all()
    assert (report.n_exact_duplicate_rows, report.n_repeat_key_rows, report.n_same_moment_rows) == (1, 1, 2)
    assert report.n_event_items_not_in_items == 0 and report.resolution == "day"
    assert_canonical(tables)
    assert tables.search_results.empty


def test_hm_fixture_items_exact(hm_dir: Path) -> None:
    items = load_hm(hm_dir).items.set_index("item_id")
    assert sorted(items.index) == ["0100000001", "0100000002", "0200000001", "0300000001", "0300000002"]
    top = items.loc["0100000001"]
    assert top.to_dict() == {
        "family_id": "0100000",
        "title": "Basic top - Black",  # the type is already in prod_name
        "brand": "H&M",
        "category": "Garment Upper body",
        "subcategory": "Top",
        "color": "Black",
        "size": "",
        "material": "",
        "gender": "women",
        "season": "",
        "occasion": "",
        "price": pytest.approx(0.02),  # median of 0.02, 0.02, 0.03
        "created_at": HM_DATASET_START,  # no release dates: every article is on sale from the start
    }
    assert items.loc["0100000002", "title"] == "Runner Sneakers - White"
    assert items.loc["0100000002", "price"] == pytest.approx(0.045)
    # 0200000001 is only in articles.csv, not in the catalog parquet: it is still an item.
    assert (items["created_at"] == HM_DATASET_START).all()
    assert items["gender"].to_dict() == {
        "0100000001": "women", "0100000002": "men", "0200000001": "kids", "0300000001": "unisex", "0300000002": "women",
    }  # fmt: skip
    never = items.loc["0300000001"]
    assert (never["price"], never["created_at"], never["title"]) == (
        0.0,
        HM_DATASET_START,
        "Tote Bag - Beige",
    )


def test_hm_fixture_purchased_catalog(hm_dir: Path) -> None:
    tables = load_hm(hm_dir, catalog="purchased")
    assert sorted(tables.items["item_id"]) == ["0100000001", "0100000002", "0200000001"]
    assert_canonical(tables)
    with pytest.raises(ValueError, match="catalog"):
        load_hm(hm_dir, catalog="everything")  # type: ignore[arg-type]


def test_hm_passes_questionable_rows_through(hm_dir: Path) -> None:
    bad = _TRANSACTIONS + "not-a-date,u3,0100000001,0.02,1\n2019-01-05,u3,0999999999,0.02,1\n"
    (hm_dir / "transactions.csv").write_text(bad)
    tables, report = load_hm_with_report(hm_dir)
    assert len(tables.events) == 8
    u3 = tables.events[tables.events["user_id"] == "u3"]
    assert u3["timestamp"].isna().sum() == 1 and "0999999999" in set(u3["item_id"])
    assert (report.n_missing_timestamps, report.n_event_items_not_in_items) == (1, 1)


def test_hm_repeated_row_is_quarantined_and_nothing_is_lost(hm_dir: Path) -> None:
    """One purchase of two units (the same customer, article and day twice) is one event; the second row is kept in
    quarantine as `repeat_in_moment`, and kept + quarantined = the input rows."""
    raw, info = load_with_info(hm_dir, "hm")
    assert info.resolution == "day" and info.load_report["n_repeat_key_rows"] == 1
    clean, quarantine, report = validate(raw)
    q = quarantine["events"]
    assert q["reason"].tolist() == ["repeat_in_moment"]
    assert (q["user_id"].iloc[0], q["item_id"].iloc[0], q["timestamp"].iloc[0]) == ("u1", "0100000001", ts("2019-01-01"))
    assert report.quarantined["events"] == {"repeat_in_moment": 1}
    assert len(clean.events) + len(q) == len(raw.events) == len(_TRANSACTIONS.strip().splitlines()) - 1
    u1_day = clean.events[(clean.events["user_id"] == "u1") & (clean.events["timestamp"] == ts("2019-01-01"))]
    assert u1_day["item_id"].tolist() == ["0100000001", "0100000002"]  # one moment, file order


def test_hm_equals_canonical_parquet_of_the_days(hm_dir: Path, tmp_path: Path) -> None:
    """`--format hm` and canonical parquet whose timestamps are the days validate to the same canonical tables."""
    raw, _ = load_with_info(hm_dir, "hm")
    canon_dir = tmp_path / "canon"
    raw.write(canon_dir)
    again, info = load_with_info(canon_dir, "canonical")
    assert info.resolution == "day"  # inferred: every timestamp is a whole day
    a, b = validate(raw)[0], validate(again)[0]
    for name in ("items", "events", "search_results"):
        assert to_arrow(a.as_dict()[name], name).equals(to_arrow(b.as_dict()[name], name)), name


def test_infer_resolution() -> None:
    def series(*times: str) -> pd.Series:
        return pd.Series([ts(t) for t in times])

    assert infer_resolution(series("2020-01-01", "2020-01-03")) == "day"
    assert infer_resolution(series("2020-01-01", "2020-01-01 10:00:07")) == "s"
    assert infer_resolution(series("2020-01-01", "2020-01-01 10:00:07.250")) == "ms"
    assert infer_resolution(pd.Series([], dtype="datetime64[ms, UTC]")) == "ms"


_REVIEWS = [
    {"overall": 5.0, "reviewerID": "R1", "asin": "B0A", "unixReviewTime": 1441324800,
     "style": {"Size:": " Big Boys", "Color:": " Blue/Orange"}, "reviewText": "ok", "summary": "s"},
    {"overall": 4.0, "reviewerID": "R2", "asin": "B0A", "unixReviewTime": 1441238400,
     "style": {"Size:": " Big Boys", "Color:": " Black"}, "reviewText": "fine", "summary": "s"},
    {"overall": 5.0, "reviewerID": "R1", "asin": "B0B", "unixReviewTime": 1441324800,
     "style": {"Size Name:": " Large"}, "reviewText": "ok", "summary": "s"},
    {"overall": 3.0, "reviewerID": "R1", "asin": "B0A", "unixReviewTime": 1441238400, "summary": "no style"},
    {"overall": 3.0, "reviewerID": "R2", "asin": "B0A", "unixReviewTime": 1441238400,
     "style": {"Color:": " Black"}, "summary": "s"},
]  # fmt: skip


@pytest.fixture
def amazon_file(tmp_path: Path) -> Path:
    path = tmp_path / "AMAZON_FASHION_5.json"
    path.write_text("\n".join(json.dumps(r, indent=2) for r in _REVIEWS) + "\n")  # pretty-printed stream
    return path


def test_amazon_fixture_exact(amazon_file: Path) -> None:
    tables, report = load_amazon2018_with_report(amazon_file)
    got = list(
        tables.events[["user_id", "item_id", "timestamp", "session_id"]].itertuples(index=False, name=None)
    )
    day1, day2 = "2015-09-03", "2015-09-04"  # 1441238400, 1441324800
    assert got == [
        ("R1", "B0A", ts(day1), 1),
        ("R1", "B0A", ts(day2), 3),
        ("R1", "B0B", ts(day2), 3),  # the same day: one moment, file order
        ("R2", "B0A", ts(day1), 2),
        ("R2", "B0A", ts(day1), 2),  # a second review of B0A that day: ingest quarantines it
    ]
    items = tables.items.set_index("item_id")
    assert list(items.index) == ["B0A", "B0B"]
    a = items.loc["B0A"]
    assert (a["title"], a["color"], a["size"]) == (
        "Amazon Fashion item B0A (Black, Big Boys)",
        "Black",
        "Big Boys",
    )
    assert (a["category"], a["subcategory"], a["family_id"], a["price"]) == ("Clothing", "", "B0A", 0.0)
    b = items.loc["B0B"]
    # No release dates: every asin gets the file's first review time, not its own (B0B's first review is day 2).
    assert a["created_at"] == b["created_at"] == ts(day1)
    assert (b["title"], b["color"], b["size"]) == ("Amazon Fashion item B0B (Large)", "", "Large")
    assert (report.n_events, report.n_users, report.n_items, report.n_same_moment_rows) == (5, 2, 2, 2)
    assert report.n_repeat_key_rows == 1 and report.resolution == "day"
    assert validate(tables)[2].quarantined["events"] == {"repeat_in_moment": 1}
    assert_canonical(tables)


def test_amazon_stream_parsing(tmp_path: Path) -> None:
    assert parse_style({"Size:": " Big Boys", "Color:": " Blue/Orange"}) == {
        "Size": "Big Boys",
        "Color": "Blue/Orange",
    }
    assert parse_style(None) == {}
    lines = "\n".join(json.dumps(r) for r in _REVIEWS[:2])  # JSON lines also parse
    assert [r["asin"] for r in iter_json_objects(lines)] == ["B0A", "B0A"]
    with pytest.raises(ValueError, match="malformed JSON"):
        list(iter_json_objects('{"a": 1}\n{"a": '))
    bad = tmp_path / "AMAZON_FASHION_5.json"
    bad.write_text(json.dumps({"reviewerID": "R9", "asin": "B0Z", "unixReviewTime": 1441238400}) + "\n")
    assert load_amazon2018(tmp_path).items["item_id"].tolist() == ["B0Z"]  # a directory works too


def test_amazon_passes_questionable_rows_through(tmp_path: Path) -> None:
    rows = [
        {"asin": "B1", "unixReviewTime": 1441238400},  # no reviewerID
        {"reviewerID": "R1", "asin": "B1"},  # no time
        {"reviewerID": "R1", "unixReviewTime": 1441238400},  # no asin
    ]
    path = tmp_path / "reviews.json"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    tables, report = load_amazon2018_with_report(path)
    assert len(tables.events) == 3 and tables.events["user_id"].isna().sum() == 1
    assert (report.n_missing_timestamps, report.n_event_items_not_in_items) == (1, 1)
    assert tables.items["item_id"].tolist() == ["B1"]
    assert_canonical(tables)


# --- real files ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hm_real():
    return load_hm_with_report(HM_DIR, catalog="full")


@pytest.fixture(scope="module")
def amazon_real():
    return load_amazon2018_with_report(AMAZON_FILE)


@needs_real
def test_hm_real_counts_and_ids(hm_real) -> None:
    tables, report = hm_real
    events, items = tables.events, tables.items
    assert (len(events), events["user_id"].nunique(), len(items)) == (31_662, 1_364, 105_542)
    assert items["item_id"].is_unique
    assert (
        items["item_id"].str.fullmatch(r"\d{10}").all() and events["item_id"].str.fullmatch(r"\d{10}").all()
    )
    assert events["item_id"].nunique() == 17_033
    assert events["item_id"].isin(set(items["item_id"])).all()
    assert report.n_exact_duplicate_rows == 2_894 and report.n_event_items_not_in_items == 0
    assert report.n_repeat_key_rows == 3_146 and report.resolution == "day"
    assert (events["action"] == "purchase").all() and tables.search_results.empty
    assert_canonical(tables)
    top = items.set_index("item_id").loc["0108775015"]  # the first catalog article, a black strap top
    assert (top["title"], top["category"], top["subcategory"], top["gender"], top["family_id"]) == (
        "Strap top Vest top - Black", "Garment Upper body", "Vest top", "women", "0108775",
    )  # fmt: skip


@needs_real
def test_hm_real_order_is_file_order(hm_real) -> None:
    events = hm_real[0].events
    assert_days_in_order_per_user(events)
    tx = pd.read_csv(HM_DIR / "transactions.csv", dtype=str)
    by_user = tx.sort_values(["customer_id", "t_dat"], kind="stable")
    # Every tie, everywhere, is in file order.
    assert events["item_id"].tolist() == by_user["article_id"].tolist()
    # One customer with the most same-day rows of several different articles, read straight from the file.
    per_day = tx.groupby(["customer_id", "t_dat"])["article_id"].agg(["size", "nunique"])
    user, day = per_day[per_day["nunique"] > 1]["size"].idxmax()
    with open(HM_DIR / "transactions.csv", newline="") as f:
        in_file = [
            r["article_id"] for r in csv.DictReader(f) if (r["customer_id"], r["t_dat"]) == (user, day)
        ]
    mine = events[(events["user_id"] == user) & (events["timestamp"].dt.strftime("%Y-%m-%d") == day)]
    assert len(in_file) >= 3 and mine["item_id"].tolist() == in_file
    assert (mine["timestamp"] == ts(day)).all()  # the day itself: one moment, no offsets
    assert mine["session_id"].nunique() == 1


@needs_real
def test_hm_real_purchased_catalog() -> None:
    tables = load_hm(HM_DIR, catalog="purchased")
    assert len(tables.items) == 17_033
    assert set(tables.items["item_id"]) == set(tables.events["item_id"])


@needs_real
def test_amazon_real(amazon_real) -> None:
    tables, report = amazon_real
    events, items = tables.events, tables.items
    assert (len(events), events["user_id"].nunique(), len(items)) == (3_176, 406, 31)
    assert events["item_id"].isin(set(items["item_id"])).all() and (items["category"] == "Clothing").all()
    assert_days_in_order_per_user(events)
    assert_canonical(tables)
    assert report.resolution == "day" and infer_resolution(events["timestamp"]) == "day"
    assert events["timestamp"].min() >= ts("2009-01-01") and events["timestamp"].max() < ts("2019-01-01")
    raw = pd.DataFrame(list(iter_json_objects(AMAZON_FILE.read_text())))
    by_user = raw.sort_values(["reviewerID", "unixReviewTime"], kind="stable")
    assert events["item_id"].tolist() == by_user["asin"].tolist()  # ties in file order
    # style: "Color:"/"Size:" keys and " value" strings are cleaned up
    for col in ("color", "size"):
        assert (items[col] == items[col].str.strip()).all() and not items[col].str.endswith(":").any()
    multi = items.set_index("item_id").loc["B00GKF5BAS"]
    assert (multi["color"], multi["size"]) == ("Multi", "X-Large")
    assert multi["title"] == "Amazon Fashion item B00GKF5BAS (Multi, X-Large)"
    assert (items["size"] != "").sum() >= 20 and (items["color"] != "").sum() >= 20


def test_hm_sibling_first_bought_after_a_target_stays_a_variant_candidate(tmp_path: Path) -> None:
    """Release dates derived from first purchases would hide a sibling bought first AFTER a target's time."""
    from models.catalog import Catalog
    from models.variants import ItemAttributes, VariantConfig, candidate_features

    (tmp_path / "transactions.csv").write_text(
        "t_dat,customer_id,article_id,price,sales_channel_id\n"
        "2019-01-01,u1,0100000001,0.02,2\n"
        "2019-01-02,u2,0100000001,0.03,1\n"  # u2's target, on Jan 2
        "2019-01-05,u3,0100000002,0.05,1\n"  # the sibling (same product code 0100000) is first bought on Jan 5
    )
    with open(tmp_path / "articles.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_ARTICLE_FIELDS)
        w.writerows(_ARTICLES[:2])
    pd.DataFrame({"article_id": [100000001, 100000002], **{k: [a[i] for a in _ARTICLES[:2]]
                  for i, k in enumerate(_ARTICLE_FIELDS) if k != "article_id"}}).to_parquet(
        tmp_path / "articles_full_catalog.parquet")
    catalog = Catalog.from_items(load_hm(tmp_path).items)
    attrs = ItemAttributes.from_items(catalog.items)
    bought, sibling = catalog.index_of(["0100000001", "0100000002"])
    t = ts("2019-01-02").value
    cand, _ = candidate_features(np.array([bought]), np.zeros(0, np.int64), t, attrs, VariantConfig())
    assert sibling in cand.tolist() and bought in cand.tolist()
    assert catalog.released(np.array([bought, sibling]), np.array([t])).all()
