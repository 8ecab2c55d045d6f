"""Plugins reach the registries through entry points: loaded once, when a registry is first asked,
registered under the entry point's name; a broken one is one line naming it. A plugin dataset's
DatasetSpec is what validation, the server and the loader's checks read."""

from __future__ import annotations

import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import fedkd.registry as registry_module
from experiments.cli import main
from experiments.cli_algorithms import algorithm_cards, listing
from fedkd.data.sources import DATASETS, DatasetSpec, clear_dataset_cache, load_dataset
from fedkd.errors import ConfigError, DataError, PluginError
from fedkd.fusion import FUSIONS
from fedkd.registry import Registry
from tests.conftest import tiny_config


def fake_install(tmp_path: Path, groups: dict[str, dict[str, str]], modules: dict[str, str]) -> Path:
    """A distribution as pip lays it out (a dist-info folder with entry_points.txt, its modules)
    in a folder to put on sys.path."""
    site = tmp_path / "site"
    info = site / "fake_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 0.1\n")
    lines = [
        f"[{group}]\n" + "".join(f"{n} = {v}\n" for n, v in eps.items()) for group, eps in groups.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(lines))
    for name, code in modules.items():
        (site / f"{name}.py").write_text(code)
    return site


@pytest.fixture
def isolate(monkeypatch):
    """Registry state (entries, plugins loaded) as it was before the test, after it."""

    def isolate(registry: Registry) -> None:
        for attr in ("_items", "_plugins"):
            monkeypatch.setattr(registry, attr, dict(getattr(registry, attr)))
        monkeypatch.setattr(registry, "_loaded", False)

    return isolate


def test_a_plugin_is_registered_under_its_entry_point_name_once_when_first_asked(tmp_path, monkeypatch):
    widgets = Registry("widget", plugins=int)
    widgets.register("one")(1)
    groups = {"fedkd.widgets": {"seven": "widget_seven:SEVEN"}}
    monkeypatch.syspath_prepend(fake_install(tmp_path, groups, {"widget_seven": "SEVEN = 7\n"}))
    scans: list[dict] = []
    real = registry_module.entry_points
    monkeypatch.setattr(registry_module, "entry_points", lambda **kw: scans.append(kw) or real(**kw))
    assert "widget_seven" not in sys.modules  # nothing runs before a registry asks
    assert widgets.get("seven") == 7 and widgets.names() == ["one", "seven"] and "seven" in widgets
    with pytest.raises(ConfigError, match="unknown widget 'eight'; allowed: one, seven"):
        widgets.get("eight")
    assert scans == [{"group": "fedkd.widgets"}]


def test_clients_on_threads_asking_at_once_all_wait_for_the_one_load(tmp_path, monkeypatch):
    widgets = Registry("widget", plugins=int)
    slow = "import time\ntime.sleep(0.5)\nSLOW = 5\n"  # a plugin that takes a while to import
    groups = {"fedkd.widgets": {"slow": "widget_slow:SLOW"}}
    monkeypatch.syspath_prepend(fake_install(tmp_path, groups, {"widget_slow": slow}))
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: widgets.get("slow"), range(4))) == [5] * 4


def test_an_entry_point_may_name_a_module_that_registers_itself(tmp_path, monkeypatch):
    widgets = Registry("widget", plugins=int)
    monkeypatch.setitem(sys.modules, "widget_registry", types.SimpleNamespace(WIDGETS=widgets))
    code = "from widget_registry import WIDGETS\nWIDGETS.register('eight')(8)\n"
    groups = {"fedkd.widgets": {"eight": "widget_eight", "nine": "widget_nine"}}
    monkeypatch.syspath_prepend(fake_install(tmp_path, groups, {"widget_eight": code, "widget_nine": ""}))
    with pytest.raises(
        PluginError, match="nine = widget_nine .*the module registered no widget named 'nine'"
    ):
        widgets.names()
    assert widgets.get("eight") == 8  # the plugin that loaded stays; the broken one fails again
    with pytest.raises(PluginError, match="nine = widget_nine"):
        widgets.get("ten")


@pytest.mark.parametrize(
    ("entry", "code", "says"),
    [
        ("gone = widget_gone:THING", "", "failed to load: AttributeError: module 'widget_gone' has no"),
        ("boom = widget_boom:X", "raise RuntimeError('no\\nGPU')", "failed to load: RuntimeError: no GPU"),
        ("word = widget_word:WORD", "WORD = 'seven'", "is a str; allowed: a int, or a module"),
        ("one = widget_one:ONE", "ONE = 11", "widget 'one' exists already; allowed: a new name"),
    ],
)
def test_a_broken_plugin_is_one_line_naming_its_entry_point_every_time_it_is_asked(
    tmp_path, monkeypatch, entry, code, says
):
    widgets = Registry("widget", plugins=int)
    widgets.register("one")(1)
    name, value = (part.strip() for part in entry.split("="))
    module = value.split(":")[0]
    monkeypatch.syspath_prepend(fake_install(tmp_path, {"fedkd.widgets": {name: value}}, {module: code}))
    for _ in range(2):
        with pytest.raises(PluginError) as caught:
            widgets.names()
        message = str(caught.value)
        assert message.startswith(f"plugin {entry} (entry point group fedkd.widgets)") and "\n" not in message
        assert says in message


def test_fedkd_algorithms_says_a_broken_plugin_in_one_line(tmp_path, monkeypatch, isolate):
    isolate(FUSIONS)
    groups = {"fedkd.algorithms": {"median": "widget_missing_module:MEDIAN"}}
    monkeypatch.syspath_prepend(fake_install(tmp_path, groups, {}))
    result = CliRunner().invoke(main, ["algorithms"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "fedkd: error: plugin median = widget_missing_module:MEDIAN (entry point group fedkd.algorithms) "
        "failed to load: ModuleNotFoundError: No module named 'widget_missing_module'"
    ]


PLUGIN_ALGORITHM = """
from dataclasses import dataclass

from fedkd.config_types import allowed
from fedkd.fusion.local import LocalOnly
from fedkd.fusion_cards import Card


@dataclass(frozen=True)
class LonelySettings:
    lonely_rounds: int = allowed(3, ">= 1")  # rounds spent alone before anything else


class Lonely(LocalOnly):
    card = Card(uploads="nothing", personalised=True, paper="a plugin of the tests",
                settings=(LonelySettings,))

LONELY = Lonely()
"""


def test_a_plugin_algorithm_is_listed_from_its_own_card_and_accepted_by_validation(
    tmp_path, monkeypatch, isolate
):
    isolate(FUSIONS)
    groups = {"fedkd.algorithms": {"lonely": "widget_lonely:LONELY"}}
    monkeypatch.syspath_prepend(fake_install(tmp_path, groups, {"widget_lonely": PLUGIN_ALGORITHM}))
    text = listing(algorithm_cards())
    row = next(line for line in text.splitlines() if line.startswith("lonely "))
    assert row.split()[1:4] == ["nothing", "yes", "-"] and row.endswith("a plugin of the tests")
    assert "  lonely: lonely-rounds" in text.splitlines()
    assert tiny_config(algorithm="lonely").fusion.algorithm == "lonely"


def test_a_plugin_algorithms_own_keys_are_config_keys_while_it_is_installed(tmp_path, monkeypatch, isolate):
    from fedkd.config import ExperimentConfig, settings_of
    from fedkd.config_doc import render_toml
    from fedkd.validation import validate_config

    isolate(FUSIONS)
    groups = {"fedkd.algorithms": {"lonely": "widget_lonely:LONELY"}}
    monkeypatch.syspath_prepend(fake_install(tmp_path, groups, {"widget_lonely": PLUGIN_ALGORITHM}))
    cfg = tiny_config(algorithm="lonely").with_overrides({"lonely-rounds": "5"})  # text, as --set gives it
    assert cfg.options == (("lonely-rounds", 5),) and cfg.to_run_config()["lonely-rounds"] == 5
    assert ExperimentConfig.from_run_config(cfg.to_run_config()) == cfg  # Flower's run_config round trip
    settings = FUSIONS.get("lonely").card.settings[0]
    assert settings_of(cfg, settings).lonely_rounds == 5
    assert settings_of(tiny_config(algorithm="lonely"), settings).lonely_rounds == 3  # its default
    assert "# rounds spent alone before anything else" in render_toml(cfg, [])
    assert validate_config(cfg) is cfg
    with pytest.raises(ConfigError, match="lonely-rounds=0 is invalid; allowed: >= 1"):
        validate_config(cfg.with_overrides({"lonely-rounds": 0}))
    with pytest.raises(ConfigError, match="lonely-rounds='many' is not a valid int"):
        cfg.with_overrides({"lonely-rounds": "many"})
    with pytest.raises(ConfigError, match="unknown config key 'lonely-round'; did you mean 'lonely-rounds'"):
        cfg.with_overrides({"lonely-round": 1})
    at_default = cfg.with_overrides({"lonely-rounds": 3})  # one run, one identity
    assert at_default.options == () and at_default == tiny_config(algorithm="lonely")
    assert validate_config(cfg.with_overrides({"algorithm": "knfu"}))  # unused, as any algorithm's key


CLASHING = """
from dataclasses import dataclass

from fedkd.fusion.local import LocalOnly
from fedkd.fusion_cards import Card


@dataclass(frozen=True)
class Clash:
    beta: float = 1.0  # a fedkd key already


class Clashing(LocalOnly):
    card = Card(uploads="nothing", paper="a plugin of the tests", settings=(Clash,))

CLASHING = Clashing()
"""


def test_a_plugin_key_that_clashes_with_a_fedkd_key_is_one_line(tmp_path, monkeypatch, isolate):
    from fedkd.config import plugin_options

    isolate(FUSIONS)
    groups = {"fedkd.algorithms": {"clashing": "widget_clash:CLASHING"}}
    monkeypatch.syspath_prepend(fake_install(tmp_path, groups, {"widget_clash": CLASHING}))
    with pytest.raises(PluginError, match="algorithm plugin clashing: setting 'beta' is a fedkd key already"):
        plugin_options()
    from fedkd.validation import validate_config

    with pytest.raises(PluginError, match="setting 'beta' is a fedkd key already"):  # chosen, no key given
        validate_config(tiny_config(algorithm="clashing"))


def _splits(train_x, train_y, test_n: int = 3):
    test = (np.zeros((test_n, 1, 4, 4), np.uint8), np.arange(test_n) % 3)
    return lambda root, download: ((train_x, train_y), test, "the test's arrays")


GOOD = (np.full((6, 1, 4, 4), 7, np.uint8), np.array([0, 1, 2, 0, 1, 2]))


def test_a_dataset_spec_is_what_validation_and_the_loader_read(isolate):
    isolate(DATASETS)
    DATASETS.register("tiny-set")(DatasetSpec(_splits(*GOOD), 3, (1, 4, 4), 6, ("a", "b", "c")))
    with pytest.raises(ConfigError, match=r"compression-k=3 is invalid; allowed: 1 \.\. 2 \(classes - 1\)"):
        tiny_config(dataset="tiny-set", models="mlp", compression="topk", compression_k=3)
    try:
        data = load_dataset("tiny-set")
        assert (data.num_classes, data.class_names, data.train_y.dtype) == (3, ("a", "b", "c"), np.int64)
        assert data.mean == pytest.approx((7 / 255,))
    finally:
        clear_dataset_cache()


@pytest.mark.parametrize(
    ("train", "says"),
    [
        ((GOOD[0].astype(np.float32), GOOD[1]), "float32 images and int64 labels; allowed: uint8 images"),
        ((GOOD[0], GOOD[1] + 1), "label 3 outside 0..2"),
        ((GOOD[0][:5], GOOD[1][:5]), "the tiny-set train split holds 5 images; allowed: 6"),
        ((GOOD[0][:, :, :2], GOOD[1]), "images are (1, 2, 4); allowed: (1, 4, 4)"),
    ],
)
def test_a_plugin_dataset_is_checked_against_its_spec_in_one_line(isolate, train, says):
    isolate(DATASETS)
    DATASETS.register("tiny-set")(DatasetSpec(_splits(*train), 3, (1, 4, 4), 6))
    try:
        with pytest.raises(DataError, match="^the test's arrays: ") as caught:
            load_dataset("tiny-set")
        assert says in str(caught.value)
    finally:
        clear_dataset_cache()


def test_the_names_listing_commands_offer_include_installed_plugins(tmp_path, monkeypatch):
    """`--algorithm`, `--dataset` and `fedkd keys --toml` list names without importing anything: an
    installed plugin's name is read from its entry point, not from its code (never imported)."""
    from fedkd import choices  # noqa: PLC0415

    groups = {"fedkd.algorithms": {"median": "never_imported:ALG"}, "fedkd.datasets": {"mine": "x:Y"}}
    monkeypatch.syspath_prepend(fake_install(tmp_path, groups, {}))
    assert "median" in choices.names("algorithm") and "knfu" in choices.names("algorithm")
    assert "mine" in choices.names("dataset") and "digits" in choices.names("dataset")
    assert "never_imported" not in sys.modules


def test_an_upload_kind_is_one_of_the_typed_kinds_each_with_its_exchange():
    from fedkd.fusion_cards import Card, Uploads
    from server.exchanges import EXCHANGES

    assert Card(uploads="nothing").uploads is Uploads.NOTHING  # a plugin may name the kind
    assert not Uploads.NOTHING.anything and Uploads.WEIGHTS_AND_PREDICTIONS.weights
    with pytest.raises(ValueError, match="upload kind 'weights\\+labels' is unknown; allowed: predictions, "):
        Card(uploads="weights+labels")
    assert set(EXCHANGES) == set(Uploads)  # every kind has its exchange
