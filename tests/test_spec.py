import pytest

from edgetune.searcher.spec import SpecError, load_spec, parse_override


def test_default_spec_is_the_embedded_study():
    spec = load_spec()
    assert spec["model.name"] == "resnet56"
    assert spec["data.name"] == "digits"
    assert spec["device.name"] == "openvino:CPU"
    assert spec.targets == ["latency", "top1"]
    assert spec.directions == ["minimize", "maximize"]
    assert spec.sampler == "tpe"  # several targets too: measured best at small budgets
    assert 15 <= spec["study.trials"] <= 30


def test_one_target_defaults_to_tpe_and_sampler_can_be_forced():
    assert load_spec(overrides={"study.targets": ["latency"]}).sampler == "tpe"
    assert load_spec(overrides={"study.sampler": "random"}).sampler == "random"


def test_the_study_records_its_sampler_and_why(tmp_path):
    from edgetune.searcher.study import open_study

    storage = f"sqlite:///{tmp_path}/s.db"
    study = open_study(load_spec(overrides={"study.storage": storage}))
    assert study.user_attrs["sampler"]["name"] == "tpe" and study.user_attrs["sampler"]["why"].startswith("auto: ")
    resumed = open_study(load_spec(overrides={"study.storage": storage, "study.sampler": "random"}))  # as this run chose
    assert resumed.user_attrs["sampler"] == {"name": "random", "why": "named in the spec"}


def test_file_values_and_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[model]\nname = "resnet20"\n[finetune]\nepochs = 4\n[search.groups]\nearly = ["layer1\\\\..*"]\n')
    spec = load_spec(path, {"finetune.epochs": 1, "study.targets": ["top1", "size"]})
    assert spec["model.name"] == "resnet20"
    assert spec["finetune.epochs"] == 1
    assert spec["search.groups"] == {"early": ["layer1\\..*"]}
    assert spec.directions == ["maximize", "minimize"]
    assert spec["study.trials"] == load_spec()["study.trials"]  # untouched keys keep the defaults


@pytest.mark.parametrize("key, value, message", [
    ("finetune.epochs", "two", "spec key 'finetune.epochs': must be an integer >= 0, got 'two'"),
    ("finetune.epochs", True, "spec key 'finetune.epochs': must be an integer >= 0, got True"),
    ("search.sparsity_max", 0.99, "spec key 'search.sparsity_max': must be a number in [0, 0.95] (the largest share of a width removed), got 0.99"),
    ("search.channel_multiple", -8, "spec key 'search.channel_multiple': must be an integer >= 0"),
    ("search.depth", "no", "spec key 'search.depth': must be true or false"),
    ("study.targets", ["latency", "speed"], "spec key 'study.targets': must be a non-empty list of distinct targets "
                                            "from: latency, top1, size, params, flops, memory, energy (or latency@DEVICE for a device of device.also), "
                                            "got ['latency', 'speed']"),
    ("study.sampler", "cmaes", "spec key 'study.sampler': must be one of: auto, tpe, nsga2, random, got 'cmaes'"),
    ("data.name", "mnist", "spec key 'data.name': must be one of: digits, cifar10, imagefolder, got 'mnist'"),
    ("data.in_memory", "yes", 'spec key \'data.in_memory\': must be true, false or "auto" (image folders: '),
    ("data.workers", -1, 'spec key \'data.workers\': must be "auto" or an integer >= 0'),
    ("data.workers", True, 'spec key \'data.workers\': must be "auto" or an integer >= 0'),
    ("search.pruners", ["l1", "magic"], "spec key 'search.pruners': must be a non-empty list from: l1, l2, fpgm"),
    ("search.exclude", ["layer1.("], "spec key 'search.exclude': 'layer1.(' is not a regular expression"),
    ("study.storage", "edgetune.db", "spec key 'study.storage': must be an SQLAlchemy URL"),
])
def test_invalid_values_name_the_key_and_what_is_allowed(key, value, message):
    with pytest.raises(SpecError) as info:
        load_spec(overrides={key: value})
    assert str(info.value).startswith(message)


def test_unknown_keys_and_sections(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[model]\nnmae = 'resnet20'\n")
    with pytest.raises(SpecError, match=r"unknown spec key 'model.nmae'; did you mean 'model.name'\?"):
        load_spec(path)
    path.write_text("[modle]\nname = 'resnet20'\n")
    with pytest.raises(SpecError, match="unknown spec section 'modle'"):
        load_spec(path)


def test_bad_files(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nname = 1")
    with pytest.raises(SpecError, match="is not valid TOML"):
        load_spec(broken)


def test_imagefolder_needs_a_directory():
    with pytest.raises(SpecError, match="data.dir"):
        load_spec(overrides={"data.name": "imagefolder"})


def test_a_lookup_of_an_undeclared_key_is_an_error_in_the_code():
    spec = load_spec()
    assert spec["study.max_top1_drop"] is None  # optional, commented out in studies/default.toml: no limit
    assert load_spec(overrides={"study.max_top1_drop": 2})["study.max_top1_drop"] == 2.0
    with pytest.raises(KeyError, match="'study.max_top1_dorp' is not a spec key"):
        spec["study.max_top1_dorp"]


def test_parse_override():
    assert parse_override("finetune.epochs=3") == ("finetune.epochs", 3)
    assert parse_override("model.name=resnet20") == ("model.name", "resnet20")
    assert parse_override("search.pruners=['l1','fpgm']") == ("search.pruners", ["l1", "fpgm"])
    with pytest.raises(SpecError, match="expected key=value"):
        parse_override("finetune.epochs")


def test_the_measurement_protocol_comes_from_the_device_keys():
    from edgetune.searcher.study import make_device

    protocol = make_device(load_spec(overrides={"device.latency_warmup_seconds": 0.25, "device.latency_max_seconds": 2,
                                                "device.name": "cpu"})).protocol
    assert (protocol.warmup_seconds, protocol.max_seconds, protocol.target_ci_rel) == (0.25, 2, 0.02)
    assert make_device(load_spec(overrides={"device.name": "cpu"})).protocol.warmup_seconds == 1.0  # the default's
    with pytest.raises(SpecError, match="device.latency_warmup_seconds.*>= 0"):
        load_spec(overrides={"device.latency_warmup_seconds": -1})


def test_a_list_key_given_one_item_is_that_list():
    assert parse_override("search.pruners=l1") == ("search.pruners", ["l1"])
    assert parse_override('search.pruners=["l1", "l2"]') == ("search.pruners", ["l1", "l2"])
    assert parse_override("search.precisions=auto") == ("search.precisions", "auto")  # a string it takes as it is
    assert parse_override("search.precisions=f32") == ("search.precisions", ["f32"])
    assert parse_override("model.name=resnet20") == ("model.name", "resnet20")
    spec = load_spec(None, dict([parse_override("search.exclude=layer1"), parse_override("search.pruners=fpgm")]))
    assert spec["search.exclude"] == ["layer1"] and spec["search.pruners"] == ["fpgm"]


def test_a_pattern_that_is_not_a_regular_expression_is_named():
    with pytest.raises(SpecError, match=r"^spec key 'search.exclude': '\(unclosed' is not a regular expression \(missing \)"):
        load_spec(None, {"search.exclude": ["layer1", "(unclosed"]})
