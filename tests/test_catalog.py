import pytest

from intentops.artifacts import CATALOG_FILE
from intentops.catalog import CatalogError, load_catalog, parse_catalog

BASE = {
    "name": "demo",
    "intents": [
        {
            "name": "weather_search",
            "description": "Weather. 天气。",
            "domain": "weather",
            "parameters": [{"name": "city", "type": "string", "description": "City"}],
        },
        {
            "name": "play_music",
            "description": "Play music",
            "domain": "music",
            "parameters": [{"name": "artist", "required": False}],
        },
    ],
}


def test_load_and_hash_is_stable(tmp_path):
    path = tmp_path / CATALOG_FILE
    catalog = parse_catalog(BASE)
    catalog.to_yaml(path)
    again = load_catalog(path)
    assert again == catalog
    assert again.content_hash == catalog.content_hash
    assert catalog.names == ["weather_search", "play_music"]
    assert catalog.get("weather_search").signature() == "weather_search(city: string)"
    assert catalog.get("play_music").signature() == "play_music([artist: string])"
    assert catalog.domains == ["music", "weather"]


def test_hash_changes_with_content():
    changed = {**BASE, "intents": [*BASE["intents"], {"name": "volume_up", "description": "Louder"}]}
    assert parse_catalog(changed).content_hash != parse_catalog(BASE).content_hash


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "weather_search", "description": "again"}, "duplicates entry 0"),
        ({"name": "bad-name", "description": "x"}, "not an identifier"),
        (
            {"name": "f", "description": "x", "parameters": [{"name": "p", "type": "blob"}]},
            "unknown parameter type",
        ),
        ({"name": "f", "description": " "}, "description is empty"),
        ({"name": "uncertain", "description": "x"}, "reserved"),
        ({"name": "f", "description": "x", "colour": "red"}, "Extra inputs"),
        (
            {"name": "f", "description": "x", "parameters": [{"name": "p"}, {"name": "p"}]},
            "repeats a parameter",
        ),
    ],
)
def test_bad_entries_name_file_and_entry(entry, message):
    raw = {**BASE, "intents": [*BASE["intents"], entry]}
    with pytest.raises(CatalogError) as info:
        parse_catalog(raw, source="cat.yaml")
    assert "cat.yaml" in str(info.value)
    assert message in str(info.value)
    assert "entry 2" in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("intents: [", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)
    with pytest.raises(CatalogError, match="'intents' list"):
        parse_catalog(["x"])


def test_subset():
    catalog = parse_catalog(BASE)
    assert catalog.subset(["play_music"]).names == ["play_music"]
    with pytest.raises(CatalogError, match="unknown intents: nope"):
        catalog.subset(["nope"])


def test_unreadable_catalog_paths_get_one_clear_line(tmp_path):
    """Issue 11.12: a folder or non-UTF-8 bytes where the catalog should be."""
    with pytest.raises(CatalogError, match="is a folder"):
        load_catalog(tmp_path)
    path = tmp_path / CATALOG_FILE
    path.write_bytes(b"intents:\n  - name: a\n    description: \xff\xfe\n")
    with pytest.raises(CatalogError, match=r"catalog\.yaml: not UTF-8"):
        load_catalog(path)


def _big_catalog(intents: int) -> dict:
    return {
        "intents": [
            {
                "name": f"intent_{i}",
                "description": f"Intent number {i}. " + "描述" * 40,
                "domain": f"d{i % 50}",
                "parameters": [{"name": "p", "description": "x" * 20}],
                "examples": [f"example {i} {j}" for j in range(3)],
            }
            for i in range(intents)
        ]
    }


def test_large_catalog_loads_in_linear_time_with_progress(caplog, monkeypatch):
    """Issue 11.14: an 11 MB catalog took 174 s: name lookups must not rebuild the index every call."""
    import time

    small, large = parse_catalog(_big_catalog(2000)), parse_catalog(_big_catalog(8000))

    def lookups(catalog):
        start = time.perf_counter()
        for name in catalog.names:
            assert catalog.get(name) is not None and name in catalog
        return time.perf_counter() - start

    small_time, large_time = lookups(small), lookups(large)
    assert large_time < 8 * small_time + 0.05  # 4x the intents: linear is ~4x, quadratic 16x

    import logging

    from intentops import catalog as catalog_module

    monkeypatch.setattr(catalog_module, "_PROGRESS_EVERY_S", 0.0)  # report on every entry instead of every 5 s
    with caplog.at_level(logging.INFO, logger="intentops.catalog"):
        parse_catalog(_big_catalog(50), source="big.yaml")
    assert any("big.yaml: 49 of 50 intents checked" in r.getMessage() for r in caplog.records)
