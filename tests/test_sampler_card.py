"""The sampler card (issue #25): sampling.sampler_card states what sample() runs (solver, NFE counted by the
network's own calls, CFG, interval, channels, shift, precision); the CLI stores it in its .npz and defaults to
bfloat16 on cuda; report.provenance and report.glue_sampled carry it into each chapter's record and the appendix;
and every notebook that samples declares cards and glues its sample-based values through glue_sampled."""

import ast
import functools
import importlib
import json
import re
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import torch
from conftest import tiny_bundle
from test_bad_inputs import one_line

from bottleneck_utils import flow, models, sampling
from bottleneck_utils.chapters import report, reproducibility
from bottleneck_utils.provenance import SAMPLER_CARD_KEYS
from tests import synthetic

ROOT = Path(__file__).resolve().parents[1]
LABELS = torch.tensor([0, 3, 4])


# ---------------------------------------------------------------------------------------------------
#                               The card states what sample() runs
# ---------------------------------------------------------------------------------------------------


def evaluations_per_sample(bundle, **options) -> float:
    """Network evaluations per sample of one sample() call, counted by a hook on the network (a CFG forward on
    2B rows counts 2)."""
    rows = []
    handle = bundle.transformer.register_forward_pre_hook(lambda module, args, kwargs: rows.append(
        len((args or (kwargs["hidden_states"],))[0])), with_kwargs=True)
    try:
        sampling.sample(bundle, LABELS, progress=False, **options)
    finally:
        handle.remove()
    return sum(rows) / len(LABELS)


@pytest.fixture(scope="module")
def sit_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("flow") / "SiT-tiny.pt"
    return synthetic.save_checkpoint(path, {"ema": synthetic.original_dit_state_dict(seed=3)})


@pytest.fixture
def sit(sit_checkpoint):
    return models.load(str(sit_checkpoint), full=True, num_heads=synthetic.HEADS)  # a flow model, noise at t = 0


def test_a_ddpm_card_names_its_scheduler_and_counts_cfg_twice():
    bundle = tiny_bundle()
    card = sampling.sampler_card(bundle, num_samples=200, num_steps=4, cfg_scale=3.0)
    assert tuple(card) == SAMPLER_CARD_KEYS
    assert json.loads(json.dumps(card)) == card  # JSON-ready
    assert card | {"sampler": None} == {
        "model": "tiny", "device": "cpu", "family": None, "sampler": None, "time": "ddpm", "solver": "ddim",
        "num_steps": 4, "nfe": 8, "cfg_scale": 3.0, "guided": True, "guidance_interval": None, "cfg_channels": 1,
        "channels": 1, "shift": None, "weights": "float32", "transformer_precision": "float32", "tf32_matmul": None,
        "vae_precision": None, "num_samples": 200, "feature_network": None, "fid_mode": None}
    assert evaluations_per_sample(bundle, num_steps=4, cfg_scale=3.0) == card["nfe"]
    off = sampling.sampler_card(bundle, num_samples=200, num_steps=4, cfg_scale=1.0)
    assert (off["nfe"], off["guided"], off["cfg_channels"]) == (4, False, None)
    assert evaluations_per_sample(bundle, num_steps=4, cfg_scale=1.0) == off["nfe"]


def test_the_card_leaves_the_bundles_scheduler_alone():
    bundle = tiny_bundle()
    bundle.scheduler.set_timesteps(7)
    sampling.sampler_card(bundle, num_samples=1, num_steps=3, cfg_scale=2.0)
    assert len(bundle.scheduler.timesteps) == 7


def test_a_family_on_a_ddpm_model_states_the_scheduler_that_runs_and_its_channels():
    bundle = tiny_bundle(in_channels=4, out_channels=8)  # learned σ, as DiT's
    card = sampling.sampler_card(bundle, num_samples=10, num_steps=3, cfg_scale=1.5, family="dit")
    assert (card["family"], card["solver"], card["cfg_channels"], card["channels"]) == (
        "dit", "ddpm-learned-sigma", 3, 4)
    assert card["sampler"] == sampling.FAMILY_SAMPLERS["dit"].source
    assert evaluations_per_sample(bundle, num_steps=3, cfg_scale=1.5, family="dit") == card["nfe"] == 6
    own = sampling.sampler_card(bundle, num_samples=10, num_steps=3, cfg_scale=1.5, family="dit", solver="scheduler")
    assert own["solver"] == "ddim" and evaluations_per_sample(bundle, num_steps=3, cfg_scale=1.5, family="dit",
                                                              solver="scheduler") == own["nfe"] == 6
    skipped = sampling.sampler_card(bundle, num_samples=10, num_steps=3, cfg_scale=0.5, family="diffusers")
    assert (skipped["guided"], skipped["nfe"]) == (False, 3)  # diffusers samples the conditional model below 1


@pytest.mark.parametrize("options", [
    {"solver": "euler"}, {"solver": "heun"}, {"solver": "repa-heun"}, {"solver": "sde"},
    {"solver": "heun", "guidance_interval": (0.3, 0.8)}, {"solver": "repa-heun", "guidance_interval": (0.0, 0.5)},
    {"family": "lightningdit"}, {"family": "repa", "guidance_interval": (0.0, 0.7), "shift": 0.5},
])
def test_a_flow_cards_nfe_is_what_the_network_runs(sit, options):
    card = sampling.sampler_card(sit, num_samples=3, num_steps=5, cfg_scale=2.5, **options)
    assert card["nfe"] == evaluations_per_sample(sit, num_steps=5, cfg_scale=2.5, **options)
    conventions = sampling.sampler_conventions(sit, options.get("family"), **{k: v for k, v in options.items()
                                                                             if k != "family"})
    assert card["time"] == "flow" and card["solver"] == conventions.solver or sit.scheduler.method
    assert card["guidance_interval"] == list(conventions.guidance_interval)
    assert card["shift"] == (conventions.shift or sit.scheduler.shift)
    assert card["cfg_channels"] == (conventions.cfg_channels or sit.transformer.config.in_channels)


def test_dopri5_has_no_fixed_nfe(sit):
    if not flow.has_torchdiffeq():
        pytest.skip("torchdiffeq is optional")
    card = sampling.sampler_card(sit, num_samples=3, num_steps=5, cfg_scale=1.5, family="sit")
    assert (card["solver"], card["nfe"]) == ("dopri5", None)


def test_precision_autocast_and_the_vae(tmp_path):
    bundle = tiny_bundle()
    assert sampling.sampler_card(bundle, num_samples=1, num_steps=2, cfg_scale=2.0,
                                 autocast="auto")["transformer_precision"] == "float32"  # auto is float32 on cpu
    card = sampling.sampler_card(bundle, num_samples=1, num_steps=2, cfg_scale=2.0, autocast="bfloat16")
    assert (card["weights"], card["transformer_precision"], card["tf32_matmul"]) == ("float32", "bfloat16", None)
    synthetic.tiny_pipeline_folder(tmp_path)
    latent = models.load(str(tmp_path))
    card = sampling.sampler_card(latent, num_samples=1, num_steps=2, cfg_scale=2.0, feature_network="Inception-v3",
                                 fid_mode="legacy_tensorflow")
    assert (card["vae_precision"], card["feature_network"], card["fid_mode"]) == ("float32", "Inception-v3",
                                                                                  "legacy_tensorflow")


@pytest.mark.parametrize("bad, fix", [
    ({"num_samples": 0}, "num_samples"), ({"num_samples": 2.5}, "num_samples"), ({"num_steps": 0}, "num_steps"),
    ({"cfg_scale": float("nan")}, "cfg_scale"), ({"autocast": "fp8"}, "autocast must be"),
    ({"family": "imagen"}, "family must be"), ({"solver": "euler"}, "apply to flow models"),
    ({"feature_network": " "}, "feature_network"), ({"fid_mode": "clean"}, "pass feature_network"),
    ({"feature_network": "Inception", "fid_mode": "tf"}, "fid_mode must be"),
    ({"family": "dit", "solver": "scheduler", "cfg_scale": 0.5}, "cfg_scale must be >= 1"),
    ({"family": "dit"}, "predicts none"),  # DiT's own sampler needs learned σ channels
])
def test_bad_card_inputs_raise_one_line(bad, fix):
    arguments = {"num_samples": 4, "num_steps": 3, "cfg_scale": 2.0} | bad
    bundle = tiny_bundle(in_channels=4) if bad.get("family") == "dit" else tiny_bundle()
    with pytest.raises(ValueError, match=re.escape(fix)) as error:
        sampling.sampler_card(bundle, **arguments)
    one_line(error)


@pytest.mark.slow  # the MNIST reference features: ~10 s on an idle core
def test_evaluators_name_their_feature_network():
    from bottleneck_utils.organisms import quality

    evaluator = quality.mnist_evaluator(n_kid=10)
    assert evaluator.feature_network.startswith("the MNIST classifier") and evaluator.fid_mode is None
    sampling.sampler_card(tiny_bundle(), num_samples=1, num_steps=2, cfg_scale=2.0,
                          feature_network=evaluator.feature_network, fid_mode=evaluator.fid_mode)


# ---------------------------------------------------------------------------------------------------
#                              The CLI: its precision and its .npz card
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("autocast, device, resolved", [
    ("auto", "cpu", (None, False)), ("auto", "cuda", ("bfloat16", False)), ("auto", "cuda:1", ("bfloat16", False)),
    ("none", "cuda", (None, True)), ("none", "cpu", (None, False)), ("float16", "cuda", ("float16", False)),
    ("bfloat16", "cpu", ("bfloat16", False)),
])
def test_cli_precision(autocast, device, resolved):
    assert sampling.cli_precision(autocast, device) == resolved


def test_cli_defaults_to_auto_and_refuses_other_precisions(tmp_path, capsys):
    arguments = ["tiny", "--num-samples", "2", "--npz", str(tmp_path / "s.npz")]
    assert sampling._parse_args(arguments).autocast == "auto"
    with pytest.raises(SystemExit):
        sampling._parse_args([*arguments, "--autocast", "fp8"])
    assert "invalid choice" in capsys.readouterr().err


def test_the_cli_stores_its_card_in_the_npz(tmp_path):
    synthetic.tiny_pipeline_folder(tmp_path / "model")
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    sampling.main([str(tmp_path / "model"), "--num-samples", "3", "--steps", "2", "--cfg", "2.0", "--batch-size", "3",
                   "--npz", str(tmp_path / "s.npz")])
    assert torch.backends.cuda.matmul.allow_tf32 == allow_tf32  # no TF32 switch on the CPU
    with np.load(tmp_path / "s.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["arr_0", "indices", "labels", "sampler_card"]
        card = json.loads(str(archive["sampler_card"]))
    expected = sampling.sampler_card(models.load(str(tmp_path / "model")), num_samples=3, num_steps=2, cfg_scale=2.0)
    assert card == expected and card["transformer_precision"] == "float32" and card["vae_precision"] == "float32"


# ---------------------------------------------------------------------------------------------------
#                       The chapters: provenance, glue_sampled, the record, the appendix
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def shown(monkeypatch):
    """What report's provenance and glue_sampled display: (object, metadata) pairs."""
    import IPython.display

    outputs = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False, metadata=None: outputs.append((obj, metadata or {})))
    return outputs


def card(**changes):
    return sampling.sampler_card(tiny_bundle(), num_samples=50, num_steps=3, cfg_scale=2.0,
                                 feature_network="the MNIST classifier") | changes


def test_provenance_shows_and_records_the_cards(shown):
    cards = {"settings": card()}
    record = report.provenance(tiny_bundle(), {"seed": 0}, sampler_cards=cards)
    assert record["sampler_cards"] == cards and record["sampled_glues"] == {}
    table = shown[0][0].data
    assert "| sampler card: settings | tiny on cpu: package sampler, ddim, 3 steps (NFE 6), CFG 2 on 1 of 1" in table
    assert "50 samples; the MNIST classifier |" in table
    assert shown[0][1][report.PROVENANCE_KEY] is record


@pytest.mark.parametrize("cards, error", [
    ({"": card()}, ValueError), ({"x": {"solver": "ddim"}}, ValueError), ({"x": dict(reversed(card().items()))},
                                                                         ValueError), ([card()], TypeError)])
def test_provenance_refuses_cards_not_built_by_sampler_card(shown, cards, error):
    with pytest.raises(error, match="sampler") as raised:
        report.provenance(tiny_bundle(), {}, sampler_cards=cards)
    one_line(raised)


def test_glue_sampled_needs_a_declared_card_and_marks_its_output(shown):
    report.provenance(tiny_bundle(), {}, sampler_cards={"settings": card(), "other": card(num_samples=9)})
    report.glue_sampled("fid", 1.5, "settings")
    report.glue_sampled("fid_other", 2.5, card(num_samples=9))  # the card itself finds its label
    (_, fid), (_, other) = shown[1:]
    assert fid["scrapbook"] == {"name": "fid", "mime_prefix": "application/papermill.record/"}
    assert fid[report.SAMPLED_KEY] == {"name": "fid", "cards": ["settings"]}
    assert other[report.SAMPLED_KEY] == {"name": "fid_other", "cards": ["other"]}
    report.glue_sampled("both", 0.5, ["settings", card(num_samples=9)])
    assert shown[-1][1][report.SAMPLED_KEY] == {"name": "both", "cards": ["settings", "other"]}
    with pytest.raises(ValueError, match="at least one sampler card") as error:
        report.glue_sampled("none", 0.5, [])
    one_line(error)
    for unknown in ("baseline", card(num_samples=10)):
        with pytest.raises(ValueError, match="not among this chapter's sampler cards") as error:
            report.glue_sampled("fid", 1.5, unknown)
        one_line(error)
    report.provenance(tiny_bundle(), {})  # a chapter without cards: nothing sample-based can be glued
    with pytest.raises(ValueError, match=r"\(none\)"):
        report.glue_sampled("fid", 1.5, "settings")


def test_the_record_lists_the_sampled_glues_and_the_appendix_shows_the_cards(shown):
    cards = {"settings": card(), "flow: mnist-sit": card(model="mnist-sit", solver="heun")}
    report.provenance(tiny_bundle(), {}, sampler_cards=cards)
    report.glue_sampled("base_fid", 3.0, "settings")
    report.glue_sampled("floor", 0.1, ["settings", "flow: mnist-sit"])
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("display_data", data={"text/plain": ""}, metadata=metadata)
        for _, metadata in shown])])
    report.lift_provenance(notebook)
    record = notebook.metadata[report.PROVENANCE_KEY]
    assert record["sampled_glues"] == {"base_fid": ["settings"], "floor": ["settings", "flow: mnist-sit"]}
    table = reproducibility.sampler_cards({"pruning": record, "similarity": {"sampler_cards": {}}, "old": {}})
    assert list(table.index) == [("pruning", "settings"), ("pruning", "flow: mnist-sit")]
    assert list(table.columns) == [*SAMPLER_CARD_KEYS, "glued values"]
    assert table.loc[("pruning", "settings"), "glued values"] == "base_fid, floor"
    assert table.loc[("pruning", "flow: mnist-sit"), "glued values"] == "floor"
    assert table.loc[("pruning", "flow: mnist-sit"), "solver"] == "heun"
    assert reproducibility.sampler_cards({"old": {}}).empty


# ---------------------------------------------------------------------------------------------------
#          The guard: a notebook that samples declares cards and glues its samples' numbers with them
# ---------------------------------------------------------------------------------------------------

SAMPLERS = {"bottleneck_utils.sampling.sample", "bottleneck_utils.sampling.sample_sharded"}
EXEMPT = "# not sampled:"  # a plain glue of a value derived from sampled results, with the reason it is not sampled
GLUES = {"glue", "glue_sampled"}


def _module_functions(name: str) -> tuple[dict, dict]:
    """A package module's top-level functions (name → node) and its import aliases (local name → qualified)."""
    tree = ast.parse(Path(importlib.import_module(name).__file__).read_text())
    return ({node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}, _aliases(tree))


def _aliases(tree: ast.AST) -> dict[str, str]:
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                    alias.name.split(".")[0]
    return aliases


def _qualified(call: ast.Call, module: str, local: set[str], aliases: dict[str, str]) -> str | None:
    """The qualified name a call resolves to (``module.f`` for a local f, an imported name, ``alias.f``)."""
    function = call.func
    if isinstance(function, ast.Name):
        return f"{module}.{function.id}" if function.id in local else aliases.get(function.id)
    if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) and function.value.id in aliases:
        return f"{aliases[function.value.id]}.{function.attr}"
    return None


@functools.cache
def sampling_functions() -> frozenset[str]:
    """Every package function that samples: calls sample() or a function that does, to a fixed point."""
    modules = sorted({f"bottleneck_utils.{path.relative_to(ROOT / 'bottleneck_utils').with_suffix('')}".replace(
        "/", ".") for path in (ROOT / "bottleneck_utils").rglob("*.py") if path.name != "__init__.py"})
    calls = {}
    for module in modules:
        functions, aliases = _module_functions(module)
        for name, node in functions.items():
            calls[f"{module}.{name}"] = {_qualified(call, module, set(functions), aliases)
                                         for call in ast.walk(node) if isinstance(call, ast.Call)} - {None}
    samplers = set(SAMPLERS)
    while grown := {name for name, called in calls.items() if called & samplers} - samplers:
        samplers |= grown
    return frozenset(samplers)


def _reads(node: ast.AST) -> set[str]:
    """The names an expression reads, less those its comprehensions bind."""
    bound = {n.id for comp in ast.walk(node) if isinstance(comp, ast.comprehension) for n in ast.walk(comp.target)
             if isinstance(n, ast.Name)}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


class _Taint(ast.NodeVisitor):
    """Walks a notebook's statements in order, tracking which names hold values computed from sampling calls (a
    name assigned from an expression that reads a tainted name or calls a sampling function; reassigned from
    anything else, it is clean again), and collects the glue calls of tainted values."""

    def __init__(self, is_sampling):
        self.is_sampling, self.tainted, self.glues = is_sampling, set(), {}

    def dirty(self, node: ast.AST | None) -> bool:
        return node is not None and (bool(_reads(node) & self.tainted) or any(
            isinstance(n, ast.Call) and self.is_sampling(n) for n in ast.walk(node)))

    def bind(self, target: ast.AST, dirty: bool) -> None:
        if isinstance(target, ast.Name):
            (self.tainted.add if dirty else self.tainted.discard)(target.id)
        elif isinstance(target, (ast.Tuple, ast.List, ast.Starred)):
            for element in getattr(target, "elts", [getattr(target, "value", None)]):
                self.bind(element, dirty)
        elif dirty:  # x[...] = or x.a = : x now holds a sampled value
            self.tainted |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}

    def visit_Assign(self, node):
        self.check(node.value)
        for target in node.targets:
            self.bind(target, self.dirty(node.value))

    def visit_AnnAssign(self, node):
        self.check(node.value)
        self.bind(node.target, self.dirty(node.value))

    def visit_AugAssign(self, node):
        self.check(node.value)
        if self.dirty(node.value):
            self.bind(node.target, True)

    def visit_For(self, node):
        self.check(node.iter)
        for _ in range(2):  # a second pass sees what the body taints
            self.bind(node.target, self.dirty(node.iter))
            for statement in node.body:
                self.visit(statement)
        for statement in node.orelse:
            self.visit(statement)

    def visit_Expr(self, node):
        self.check(node.value)

    def check(self, node: ast.AST | None) -> None:
        """Records each glue call in ``node`` and whether it glues a tainted value."""
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)) if node is not None else ():
            name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
            if name == "glue":
                self.glues[call] = self.glues.get(call, False) or any(self.dirty(arg) for arg in call.args[1:])

    def generic_visit(self, node):  # if, with, try: their statements in order; expressions are checked
        for field in ("test", "items", "value"):
            child = getattr(node, field, None)
            if isinstance(child, ast.AST):
                self.check(child)
        super().generic_visit(node)


def notebook_violations(code: str) -> list[str]:
    """Why a notebook's code (its code cells, joined) breaks the sampler-card rule; empty where it keeps it.

    The notebook samples where it calls a package function that samples (:func:`sampling_functions`). Then its
    ``report.provenance`` call passes ``sampler_cards=``, and each ``glue(...)`` of a value computed from a sampling
    call's results (followed through assignments and loops, in order) is ``report.glue_sampled(name, value, card)``,
    or carries ``# not sampled: <reason>`` on one of its lines (a label or count read from those results, not a
    sampled number). ``report.verdict_table`` glues its rows itself: the chapter's provenance cards stand for them.
    """
    tree, lines = ast.parse(code), code.splitlines()
    aliases, samplers = _aliases(tree), sampling_functions()

    def is_sampling(call: ast.Call) -> bool:
        return _qualified(call, "__notebook__", set(), aliases) in samplers

    if not any(isinstance(n, ast.Call) and is_sampling(n) for n in ast.walk(tree)):
        return []
    problems = []
    provenance = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and n.func.attr == "provenance"]
    if not provenance or not any(k.arg == "sampler_cards" for call in provenance for k in call.keywords):
        problems.append("it samples, but its report.provenance(...) passes no sampler_cards= (sampling.sampler_card)")
    taint = _Taint(is_sampling)
    taint.visit(tree)
    for call, dirty in sorted(taint.glues.items(), key=lambda item: item[0].lineno):
        if dirty and not any(EXEMPT in line for line in lines[call.lineno - 1:call.end_lineno]):
            problems.append(f"line {call.lineno}: {ast.get_source_segment(code, call)[:60]}... glues a value computed "
                            f"from samples: use report.glue_sampled(name, value, card) (or mark '{EXEMPT} why')")
    return problems


def notebook_code(name: str) -> str:
    notebook = jupytext.read(ROOT / "notebooks" / f"{name}.md")
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


NOTEBOOKS = sorted(path.stem for path in (ROOT / "notebooks").glob("*.md"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_sampling_notebook_carries_its_sampler_cards(name):
    assert notebook_violations(notebook_code(name)) == []


def test_the_sampling_functions_are_found_through_their_callers():
    found = sampling_functions()
    assert {"bottleneck_utils.chapters.pruning.chapter_runs", "bottleneck_utils.chapters.pruning.organism_runs",
            "bottleneck_utils.chapters.continuous.measure", "bottleneck_utils.organisms.quality.by_cfg",
            "bottleneck_utils.organisms.quality.mnist_quality"} <= found
    assert not {"bottleneck_utils.chapters.head_tail.measure", "bottleneck_utils.chapters.pruning.chapter_scores",
                "bottleneck_utils.sampling.sampler_card"} & found


CARDLESS = '''
from myst_nb import glue
from bottleneck_utils.chapters import pruning, report
record = report.provenance(bundle, parameters)
glue("n_samples", n_samples, display=False)
runs = pruning.chapter_runs(bundle, evaluator, settings, labels, p)
scores = pruning.chapter_scores(bundle, evaluator, settings, runs, p)
floor, noise = pruning.noise_floor(scores, n_samples)
for name, value in floor.items():
    glue(name, value, display=False)
'''


def test_a_card_less_chapter_fails_the_guard():
    problems = notebook_violations(CARDLESS)
    assert len(problems) == 2, problems
    assert "passes no sampler_cards=" in problems[0] and "glue(name, value" in problems[1]


def test_a_chapter_with_cards_and_glue_sampled_passes_the_guard():
    fixed = (CARDLESS.replace("report.provenance(bundle, parameters)",
                              "report.provenance(bundle, parameters, sampler_cards=cards)")
             .replace("    glue(name, value, display=False)", "    report.glue_sampled(name, value, 'settings')"))
    assert notebook_violations(fixed) == []
    exempt = fixed + 'glue("n_floor", len(floor), display=False)  # not sampled: a count of seeds\n'
    assert notebook_violations(exempt) == []
    assert len(notebook_violations(exempt.replace("  # not sampled: a count of seeds", ""))) == 1
    assert notebook_violations("from bottleneck_utils.chapters import head_tail\nx = head_tail.measure(b)\n") == []


def test_the_chapters_cards_match_what_their_runs_sample():
    from bottleneck_utils.chapters import continuous, pruning
    from bottleneck_utils.organisms import quality

    organism = models.load("mnist-dit")
    assert quality.scoring(organism) == (quality.MNIST_FEATURE_NETWORK, None)
    card = pruning.organism_card(organism, 20, 5, 3.0)
    assert (card["num_samples"], card["nfe"], card["feature_network"]) == (20, 10, quality.MNIST_FEATURE_NETWORK)
    glued = ast.parse(Path(continuous.__file__).read_text())
    function = next(node for node in glued.body if isinstance(node, ast.FunctionDef) and node.name == "glued")
    names = {node.value for node in ast.walk(function) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    names |= {f"{prefix}_delta_{end}" for prefix in ("forty", "random", "head") for end in ("low", "high")}
    assert continuous.SAMPLED_GLUES <= names  # every sampled name is one glued() makes


def test_a_quality_record_carries_its_best_scales_card():
    from bottleneck_utils.organisms import quality

    bundle = tiny_bundle()
    record = quality.by_cfg(bundle, LABELS, lambda images, labels: {"per_digit": float(images.mean())}, 2,
                            cfg_scales=[1.0, 3.0])
    card = record["sampler_card"]
    assert card == sampling.sampler_card(bundle, num_samples=3, num_steps=2, cfg_scale=record["best_cfg"],
                                         feature_network=quality.READOUT)
    assert card["nfe"] == (2 if record["best_cfg"] == 1.0 else 4)


def test_only_notebooks_and_report_glue():
    """The guard reads the notebooks: a chapter module that glued on its own would slip past it."""
    for path in sorted((ROOT / "bottleneck_utils").rglob("*.py")):
        if path.name == "report.py":
            continue
        calls = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)
                 and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "glue"]
        assert not calls, f"{path.relative_to(ROOT)} glues; return the value and glue it in the notebook"
