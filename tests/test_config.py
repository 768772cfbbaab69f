
import pytest

from bench.config import DEFAULT_TOLERANCES, Cell, config_from_dict, load_config
from bench.errors import BenchError

BASE = {
    "name": "t",
    "models": [{"name": "a", "source": "zoo:resnet18-tiny"}, {"name": "b", "source": "zoo:unet-tiny"}],
    "backends": ["onnxruntime", "tvm"],
    "batch_sizes": [1, 2],
}


def test_grid_expands_in_model_backend_precision_batch_order():
    cfg = config_from_dict({**BASE, "precisions": ["fp32", "fp16"]})
    grid = cfg.grid()
    assert len(grid) == 2 * 2 * 2 * 2
    assert grid[0] == Cell("a", "onnxruntime", "fp32", 1)
    assert grid[1] == Cell("a", "onnxruntime", "fp32", 2)
    assert grid[2] == Cell("a", "onnxruntime", "fp16", 1)
    assert grid[-1] == Cell("b", "tvm", "fp16", 2)


def test_exclude_rules_match_every_given_key():
    cfg = config_from_dict({**BASE, "exclude": [{"backend": "tvm", "batch_size": 2}, {"model": "b"}]})
    assert cfg.grid() == [
        Cell("a", "onnxruntime", "fp32", 1), Cell("a", "onnxruntime", "fp32", 2), Cell("a", "tvm", "fp32", 1),
    ]


def test_defaults_are_filled_and_frozen():
    cfg = config_from_dict(BASE)
    assert cfg.precisions == ["fp32"]
    assert cfg.reference.backend == "onnxruntime" and cfg.reference.precision == "fp32"
    assert cfg.tolerance("fp16") == DEFAULT_TOLERANCES["fp16"]
    with pytest.raises(Exception):
        cfg.seed = 3


def test_tolerance_override_and_digest_changes():
    a = config_from_dict(BASE)
    b = config_from_dict({**BASE, "tolerances": {"fp32": {"atol": 1.0, "rtol": 0.5}}})
    assert b.tolerance("fp32").atol == 1.0
    assert a.digest() != b.digest()
    assert a.digest() == config_from_dict(dict(BASE)).digest()


def test_yaml_and_dict_build_the_same_config(tmp_path):
    from tests.conftest import write_yaml

    path = write_yaml(tmp_path / "c.yaml", BASE)
    assert load_config(path) == config_from_dict(BASE)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: t\nmodels: [{name: a, source: zoo:resnet18-tiny}]\nbackends: [onnxruntime]\nbatch_sizes: [1]\nwarmup: 3\n",
         r"c.yaml:5: warmup: unknown key"),
        ("name: t\nmodels: [{name: a, source: zoo:resnet18-tiny}]\nbackends: [onnxruntime]\nbatch_sizes: [one]\n",
         r"c.yaml:4: batch_sizes[0]: Input should be a valid integer"),
        ("name: t\nmodels: [{name: a, source: zoo:resnet18-tiny}]\nbackends: [onnxrt]\nbatch_sizes: [1]\n",
         r"c.yaml:3: backends: unknown backend 'onnxrt'; valid: onnxruntime, tvm, "),
        ("name: t\nmodels:\n  - name: a\n    source: zoo:resnet99\nbackends: [tvm]\nbatch_sizes: [1]\n",
         r"c.yaml:4: models[0].source: unknown zoo architecture 'resnet99'; valid:"),
        ("name: t\nmodels: [{name: a, source: zoo:resnet18-tiny}]\nbackends: [tvm]\nbatch_sizes: [1]\n"
         "exclude: [{backend: tvm}]\n", r"the grid is empty"),
        ("name: t\nmodels: [\n  {name: a\nbackends: [tvm]\n", r"c.yaml:4:9: malformed YAML: expected ',' or '}'"),
        ("", r"c.yaml: the config file is empty"),
        ("- a\n- b\n", r"must be a mapping"),
        ("name: t\nmodels: [{name: a, source: model.pt}]\nbackends: [tvm]\nbatch_sizes: [1]\n",
         r"c.yaml:2: models[0].source: must be 'zoo:<arch>' or a path ending in .onnx"),
        ("name: t\nmodels: [{name: a, source: zoo:resnet18-tiny}]\nbackends: [tvm]\nbatch_sizes: [1]\n"
         "timing: {min_iterations: 0}\n", r"c.yaml:5: timing.min_iterations: Input should be greater than or equal to 1"),
    ],
)
def test_bad_config_names_file_line_and_key(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(BenchError) as e:
        load_config(path)
    assert expected in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(BenchError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_offline_throughput_over_a_short_window_is_warned_about():
    base = {"name": "w", "models": [{"name": "m", "source": "zoo:resnet18-tiny"}], "backends": ["onnxruntime"], "batch_sizes": [1],
            "threads": 1}
    short = config_from_dict({**base, "scenarios": ["offline"], "loadgen": {"min_duration_s": 0.2}})
    assert any(w.startswith("loadgen.min_duration_s: 0.2 s: offline throughput (offline)") for w in short.warnings())
    assert not any("min_duration_s" in w for w in config_from_dict({**base, "scenarios": ["offline"]}).warnings())
    latency_only = config_from_dict({**base, "scenarios": ["multi_stream"], "loadgen": {"min_duration_s": 0.2}})
    assert not any("min_duration_s" in w for w in latency_only.warnings())
