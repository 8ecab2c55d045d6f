"""Every key is explained (meaning and allowed values), and the commented TOML round-trips."""

import tomllib

from fedkd import choices
from fedkd.config import ExperimentConfig, config_keys
from fedkd.config_doc import field_comments, key_choices, key_comments, render_toml
from fedkd.config_files import load_config_file


def test_every_key_says_what_it_means_and_what_is_allowed():
    comments = key_comments()
    assert sorted(comments) == config_keys()
    for key, text in comments.items():
        assert len(text) > 15 and "\n" not in text, key
        assert "allowed:" in text or " | " in text, f"{key}: {text!r} does not say what is allowed"


def test_comments_come_from_the_fields_in_config_py():
    comments = field_comments()
    assert comments["alpha"].startswith("Dirichlet concentration")  # trailing comment
    assert "labelled" in comments["pretrain-epochs"]  # comment block above the field
    assert comments["models"].startswith("Comma-separated architecture names")


def test_registry_keys_list_their_names():
    text = key_comments()
    for key, names in key_choices().items():
        assert text[key].endswith(f"allowed: {', '.join(names)}"), key
    assert "knfu-guard" in text["algorithm"] and "inprocess" in text["engine"]


def test_names_read_from_the_source_are_the_registries_own():
    from fedkd.data.partition import PARTITIONERS
    from fedkd.data.sources import DATASETS
    from fedkd.fusion import FUSIONS
    from fedkd.knowledge import DIVERGENCES
    from fedkd.models import MODELS

    registries = {"dataset": DATASETS, "partitioner": PARTITIONERS, "model": MODELS}
    registries |= {"divergence": DIVERGENCES}
    assert set(registries) == set(choices.REGISTRIES)
    for kind, registry in {**registries, "algorithm": FUSIONS}.items():
        assert choices.names(kind) == registry.names() and len(registry.names()) >= 3, kind


def test_a_changed_config_round_trips_through_its_toml(tmp_path):
    cfg = ExperimentConfig().with_overrides(
        {
            "alpha": 0.05,
            "models": "mlp,resnet8",
            "include-self": False,
            "transfer-dataset": "mnist",
            "delta": 1e-7,
            "reply-timeout": 2.5,
            "data-dir": "/some/where",
        }
    )
    text = render_toml(cfg, ["a header", ""])
    assert text.startswith("# a header\n#\n")
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert tomllib.loads(text) == cfg.to_run_config()
    assert ExperimentConfig().with_overrides(load_config_file(path)) == cfg
    assert "out-dir" not in tomllib.loads(render_toml(cfg, [], exclude=("out-dir",)))
