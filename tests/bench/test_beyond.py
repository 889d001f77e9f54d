from bench import beyond, common
from pdiff.denoisers import DENOISERS
from pdiff.pipeline import stage_hash
from pdiff.presets import load_config


def comparison(difference: float, low: float, high: float, verdict: str) -> dict:
    return {"difference": difference, "ci_low": low, "ci_high": high, "verdict": verdict}


def entry(val: float, dominates: bool, generators: int = 1) -> dict:
    """A configuration whose generated models dominate every baseline (as accurate, less similar) and lie nearer
    to the held-out checkpoints than the training ones, or are dominated by each (less accurate, more similar)
    and lie farther: the section decides from these CIs."""
    accuracy = comparison(0.001, -0.002, 0.004, "no detectable difference") if dominates else \
        comparison(-0.0025, -0.004, -0.001, "lower")
    similarity = comparison(-0.05, -0.07, -0.03, "lower") if dominates else comparison(0.05, 0.03, 0.07, "higher")
    versus = {b: {"accuracy": accuracy, "similarity": similarity, "closeness": comparison(-1.0, -2.0, -0.5, "lower")}
              for b in beyond.BASELINES}
    return {"k": 200, "generated_val_mean": val, "generated_test_mean": 0.6, "original_test_mean": 0.61,
            "versus_original": comparison(-0.01, -0.02, 0.0, "lower"), "generated_max_iou_median": 0.8,
            "original_max_iou_median": 0.9, "generators": generators,
            "nearer_than_training": comparison(-1.0, -2.0, -0.5, "lower") if dominates else
            comparison(1.0, 0.5, 2.0, "higher"),
            "distance_across_runs": {"before": 40.0, "after": 30.0}, "versus": versus,
            "stages": {"collect": {"wall": 60.0, "cpu": 50.0, "rss": 900.0}}}


def test_the_section_answers_the_question_with_the_configuration_chosen_on_validation() -> None:
    entries = {"one run/flow": entry(0.61, False), "aligned runs/flow": entry(0.63, False),
               "one run/flow, 3 generators": entry(0.70, False, generators=3)}  # confirms; never chosen
    entries["one run/flow, 3 generators"]["command"] = "python -m bench.beyond --generators 3"
    section = beyond.render(common.results("python -m bench.beyond", tasks={"mnist1d-mlp-full": entries}, runs=4,
                                           n=100))
    assert "No configuration's generated models dominate every baseline" in section
    assert ("The closest (chosen on validation accuracy among the screen's) is aligned runs/flow; this generator"
            in section)
    assert "generated is dominated by mean_of_k (accuracy -0.25 [-0.40, -0.10] points)" in section
    assert ("| one run/flow | this generator | mean_of_k | -0.25 [-0.40, -0.10] | +0.050 [+0.030, +0.070] | "
            "-1.000 [-2.000, -0.500] | generated is dominated by | no |") in section
    assert "| one run/flow, 3 generators | method, 3 generators | interpolation |" in section
    assert section.count("Method-scope rows: `python -m bench.beyond --generators 3`.") == 1
    assert "40.0 -> 30.0" in section and "Not run on this task: one run/latent diffusion," in section
    entries["aligned runs/flow, 3 generators"] = entry(0.63, True, generators=3)
    section = beyond.render(common.results("python -m bench.beyond", tasks={"mnist1d-mlp-full": entries}, runs=4,
                                           n=100))
    assert ("Yes, here: the generated models of aligned runs/flow, 3 generators (method, 3 generators) dominate "
            "every baseline") in section
    assert "Not screened: mnist1d-convnet-full." in section
    (row,) = beyond.glance({"tasks": {"mnist1d-mlp-full": entries}})
    assert row[2] == "yes: aligned runs/flow, 3 generators (method, 3 generators)"
    assert row[1] == "mnist1d-mlp-full, 2 configurations screened"
    bn_subset = beyond.render_task("cifar10-convnet3-cpu", {"one run/flow": entry(0.7, False)}, runs=4, n=100)
    assert "One run only here: R runs need the whole network" in bn_subset and "Not run on" not in bn_subset
    del entries["aligned runs/flow, 3 generators"]
    (row,) = beyond.glance({"tasks": {"mnist1d-mlp-full": entries}})
    assert row[2].startswith("no; closest (chosen on validation): aligned runs/flow, this generator: generated is "
                             "dominated by noise@0.05;")


def test_each_configuration_is_a_valid_config_of_its_own() -> None:
    folders = set()
    for collection in beyond.COLLECTIONS:
        for family in beyond.FAMILIES:
            overrides = beyond.overrides_of("mnist1d-mlp-full", collection, family, runs=4, n=100)
            config = load_config("mnist1d-mlp-full", overrides)
            folders.add(config.task)
            assert config.train.holdout == 50 and config.train.holdout_split == "last"
            assert config.collect.runs == (1 if collection == "one run" else 4)
            assert (config.train.family == "flow") == (family == "flow")
    assert len(folders) == 6
    flow = load_config("mnist1d-mlp-full", beyond.overrides_of("mnist1d-mlp-full", "aligned runs", "flow", 4, 100))
    assert flow.train.autoencoder.latent_dim == 149 and flow.collect.align == "weights"
    assert "interpolation" in flow.evaluate.baselines and flow.train.generators == 1
    method = load_config("mnist1d-mlp-full", beyond.overrides_of("mnist1d-mlp-full", "one run", "flow", 4, 99, 3))
    assert method.train.generators == 3 and method.task == "mnist1d-mlp-full-one-run-flow-g3"


def test_a_flow_on_a_token_preset_gets_a_flat_velocity_network_and_shares_its_collection() -> None:
    flow = load_config("mnist-convnet3-full", beyond.overrides_of("mnist-convnet3-full", "one run", "flow", 4, 100, 3))
    diffusion = load_config("mnist-convnet3-full", beyond.overrides_of("mnist-convnet3-full", "one run",
                                                                      "latent diffusion", 4, 100, 3))
    assert DENOISERS[flow.train.diffusion.arch].latent == "flat" and flow.train.autoencoder.latent_dim == 74
    assert diffusion.train.diffusion.arch == "transformer"  # the preset's generator, untouched
    assert stage_hash(flow, "collect") == stage_hash(diffusion, "collect")


def test_a_variant_keeps_its_own_run_folder_rows_and_says_what_it_changes() -> None:
    plain = beyond.overrides_of("mnist1d-convnet", "one run", "latent diffusion", 4, 100)
    layers = beyond.as_variant(plain, "k7")
    assert beyond.run_name(layers) == beyond.run_name(plain) + "-k7" and layers[1:] == plain[1:]
    assert beyond.key_of("one run/flow", 3, "k7") == "one run/flow [k7], 3 generators"
    assert beyond.key_of("one run/flow", 1, None) == "one run/flow"
    variant = {**entry(0.62, False), "variant": "k7", "changed": ["train.autoencoder.kwargs={kernel_size: 7}"]}
    section = beyond.render_task("mnist1d-convnet", {"one run/flow": entry(0.61, False),
                                                     "one run/flow [k7]": variant}, runs=4, n=100)
    assert "| one run/flow [k7] | this generator | 62.00 | 60.00 | 61.00 |" in section
    assert "Variant [k7]: the configuration with `train.autoencoder.kwargs={kernel_size: 7}`." in section
    assert "The closest (chosen on validation accuracy among the screen's) is one run/flow [k7]" in section
    for bad in (["--variant", "a b", "x=1"], ["x=1"]):
        try:
            beyond.measure(beyond.parser().parse_args(bad))
        except SystemExit as stop:
            assert "--variant NAME" in str(stop)
        else:
            raise AssertionError(f"{bad}: overrides without a plain variant name were taken")


def test_a_task_with_method_scope_runs_only_says_its_configurations_were_chosen_elsewhere() -> None:
    entries = {"one run/flow, 3 generators": entry(0.98, False, generators=3),
               "one run/latent diffusion, 3 generators": entry(0.99, False, generators=3)}
    section = beyond.render_task("mnist-convnet3-full", entries, runs=4, n=100)
    assert ("The closest (chosen on validation accuracy among those confirmed here, chosen on the screens of "
            "mnist1d-mlp-full and mnist1d-convnet-full) is one run/latent diffusion; method, 3 generators:") in section
    assert "Method-scope runs only here" in section and "One run only here" not in section
    assert "tokens autoencoder and transformer denoiser" in section
    (row,) = beyond.glance({"tasks": {"mnist-convnet3-full": entries}})
    assert row[1] == "mnist-convnet3-full, 2 configurations confirmed at method scope"
    assert row[2].startswith("no; closest (chosen on validation): one run/latent diffusion, method, 3 generators:")


def test_the_readme_answers_only_where_a_configuration_was_confirmed_at_method_scope() -> None:
    results = {"tasks": {"cifar10-convnet3-cpu": {"one run/flow": entry(0.7, False)},
                         "mnist1d-mlp-full": {"one run/flow": entry(0.6, False),
                                              "one run/flow, 3 generators": entry(0.6, False, generators=3)}}}
    assert [row[1] for row in beyond.glance(results)] == ["mnist1d-mlp-full, 1 configuration screened"]


def test_the_readme_states_the_committed_answer() -> None:
    readme = " ".join((common.ROOT / "README.md").read_text().split())  # the sentence as wrapped there
    assert beyond.headline(common.load_results("beyond")) in readme


def test_the_headline_counts_the_method_scope_runs_that_dominate_the_mean_or_reach_held_out_checkpoints() -> None:
    results = {"tasks": {"a": {"one run/flow": entry(0.6, True), "one run/flow, 3 generators": entry(0.6, False, 3)},
                         "b": {"one run/flow, 5 generators": entry(0.6, True, 5)}, "c": {"x": entry(0.6, True)}}}
    assert beyond.headline(results).endswith(
        "ran 2 configurations at method scope (3 or more trained generators each) on 2 tasks: 1 of them dominate the "
        "checkpoints' mean on the accuracy-novelty plane, and 1 of them lie nearer to held-out checkpoints than the "
        "training checkpoints do.")
