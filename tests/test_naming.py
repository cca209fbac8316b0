from bench.naming import MAX_LEN, run_name, safe_component


def test_run_name_puts_main_choices_first_and_strips_prefixes():
    assert run_name(["seed=0", "+loss=focal", "+data=synthetic"]) == "data=synthetic,loss=focal,seed=0"
    assert run_name(["a.b=1", "+loss=ce", "+experiment=demo"]) == "experiment=demo,loss=ce,a.b=1"


def test_run_name_ignores_keys_that_do_not_change_results():
    base = run_name(["+loss=ce", "seed=1"])
    noisy = ["+loss=ce", "seed=1", "logger=wandb", "paths.output_dir=/x", "name=demo", "force=true"]
    assert run_name(noisy) == base


def test_run_name_is_filesystem_safe_and_bounded():
    name = run_name(["+loss=ce", "model.kwargs.decoder_channels=[1, 2/3]", "x=" + "y" * 300])
    assert "/" not in name and " " not in name
    assert len(name) <= MAX_LEN
    assert name != run_name(["+loss=ce", "model.kwargs.decoder_channels=[1, 2/3]", "x=" + "y" * 299])


def test_run_name_without_overrides():
    assert run_name([]) == "default"


def test_distinct_overrides_never_share_a_directory():
    a, b = run_name(["+loss=ce", "data.root=/a/b"]), run_name(["+loss=ce", "data.root=/a-b"])
    assert a != b and "/" not in a + b
    assert a.startswith("loss=ce,data.root=-a-b~") and b.startswith("loss=ce,data.root=-a-b~")
    assert run_name(["+loss=ce", "data.root=a-b"]) == "loss=ce,data.root=a-b"  # unaltered: no hash
    # a data root is part of a run (paths.output_dir is not)
    assert run_name(["+loss=ce", "paths.data_root=/d"]) != run_name(["+loss=ce"])


def test_secret_overrides_are_masked_in_the_name():
    name = run_name(["+loss=ce", "+model.kwargs.auth_token=s3cr3t"])
    assert "s3cr3t" not in name and "auth_token=___~" in name
    assert name == run_name(["+loss=ce", "+model.kwargs.auth_token=other"])
    assert run_name(["+loss=ce", "+logger.api_key=s3cr3t"]) == "loss=ce"  # logger: not identity


def test_safe_component_has_no_separators_dots_or_hidden_names():
    for bad in ("../../x", "..", ".", "/abs/path", "a\\b", ".hidden", "a b"):
        out = safe_component(bad)
        assert "/" not in out and "\\" not in out and ".." not in out and not out.startswith(".")
        assert out not in ("", ".", "..")
    assert safe_component("paper_synapse") == "paper_synapse"
