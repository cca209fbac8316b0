from bench.naming import MAX_LEN, run_name


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
