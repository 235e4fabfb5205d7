"""What every chapter imports besides the science: its parameter check, its provenance record and the verdict rule.

Each notebook's setup cell calls :func:`check_parameters` and then :func:`provenance`, which shows a table and
attaches the parameters, package versions, model sha256 and git commit to its output; ``tools/book.py execute``
copies that into the notebook's metadata (``metadata.bottleneck_provenance``), where the reproducibility appendix
reads it back (:func:`chapter_provenance`). Importing this module loads no torch: the book's stale check runs
without it.
"""

from __future__ import annotations

import ast
import math
import operator
from pathlib import Path

from bottleneck_utils.provenance import SAMPLER_CARD_KEYS, git_commit, hardware, package_versions

ROOT = Path(__file__).resolve().parents[2]  # the source checkout (the book exists only there)
BOOK_DIR = ROOT / "book"
PROVENANCE_KEY = "bottleneck_provenance"
SAMPLED_KEY = "bottleneck_sampled"  # output metadata of a glue_sampled value: its name and its card's label
INJECTED = "# Parameters"  # how papermill's injected cell starts
# How far the glued values move between machines: observed, not computed by the book. One MNIST-FID was 56.53999
# on one machine and 56.53919 on another (another CPU, BLAS and thread count), a relative change of about 1.4e-5.
CROSS_MACHINE_FID = (56.53999, 56.53919)
CROSS_MACHINE_RELATIVE = abs(CROSS_MACHINE_FID[1] - CROSS_MACHINE_FID[0]) / CROSS_MACHINE_FID[0]

# ---------------------------------------------------------------------------------------------------
#                                       Parameters and verdicts
# ---------------------------------------------------------------------------------------------------


def check_parameters(values: dict, types: dict) -> None:
    """Raises TypeError naming each papermill parameter whose value has the wrong type.

    Args:
        values: the notebook's parameters, by name.
        types: the accepted type (or tuple of types) of each; a bool is not accepted where only int is.

    Raises:
        ValueError: ``values`` and ``types`` name different parameters (a typo in the notebook).
        TypeError: a value of the wrong type.
    """
    if set(values) != set(types):
        raise ValueError(f"parameters {sorted(set(values) ^ set(types))} are not both listed and typed in the notebook")
    wrong = [f"{name}={value!r} (expected {types[name]})" for name, value in values.items()
             if not _accepts(types[name], value)]
    if wrong:
        raise TypeError("bad notebook parameters: " + "; ".join(wrong))


def notebook_parameters(namespace: dict, spec: dict) -> dict:
    """A chapter's papermill parameters, read by name from the notebook's namespace and type-checked.

    The parameters cell is the one place a value is written; ``spec`` (the chapter module's ``PARAMETERS``: name →
    accepted type or tuple of types) is the one place a name is typed. A test checks that every chapter's parameters
    cell assigns exactly the names its spec lists. A name that papermill injected (``-p NAME VALUE``) and the spec
    lacks is refused: papermill alone would run the chapter without it.

    Args:
        namespace: the notebook's ``globals()`` after the parameters cell (and papermill's injected cell); its
            ``In`` (IPython's executed cell sources) shows what papermill injected.
        spec: the chapter's parameter types.

    Raises:
        ValueError: a name of ``spec`` is not assigned in the notebook, or papermill injected a name it lacks.
        TypeError: a value of the wrong type.
    """
    unknown = sorted(injected_names(namespace.get("In", [])) - set(spec))
    if unknown:
        raise ValueError(f"unknown parameters {unknown} were injected (papermill -p); this chapter's parameters are "
                         f"{sorted(spec)}")
    missing = sorted(set(spec) - set(namespace))
    if missing:
        raise ValueError(f"the parameters cell does not assign {missing}; add them or drop them from the spec")
    values = {name: namespace[name] for name in spec}
    check_parameters(values, spec)
    return values


def injected_names(sources: list[str]) -> set[str]:
    """The names assigned in papermill's injected cells among the executed cell ``sources`` (IPython's ``In``):
    those whose source starts with papermill's ``# Parameters`` comment."""
    cells = [ast.parse(source) for source in sources if isinstance(source, str) and source.startswith(INJECTED)]
    return {target.id for tree in cells for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def _accepts(types, value) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:  # True is an int to Python, but not a step count
        return False
    return isinstance(value, types)


def summary_table(values: dict):
    """``stats.summary(y, t, detail=True)`` as a DataFrame: one row per statistic, columns ``c = y + t`` and ``y``."""
    import pandas as pd

    rows = {"cosine (mean)": "cos_{}", "cosine (median)": "cos_{}_median", "cosine (min)": "cos_{}_min",
            "nPR (mean over vectors)": "npr_{}", "nPR (of the mean vector)": "npr_{}_of_mean",
            "PR (mean over vectors)": "pr_{}"}
    return pd.DataFrame({column: {label: values[key.format(part)] for label, key in rows.items()}
                         for column, part in (("c = y + t", "c"), ("y", "y"))})


VERDICTS = ("reproduced", "reproduced but negligible", "not reproduced", "not testable here")
PRECONDITION_WORDS = ("met", "unmet")
VERDICT_RULE = (
    "A claim is judged only where its precondition row (is this model in the regime the claim is about?) is met, "
    "and is otherwise 'not testable here'; where it is met, the claim is 'reproduced' when its test (our number "
    "against the paper's bar from paper.py, both shown) holds, 'reproduced but negligible' when it holds but the "
    "effect is below the stated negligible bar, and 'not reproduced' when it fails. A number or bar that is not "
    "finite (NaN, infinite) is no measurement: its claim is 'not testable here' and its precondition 'unmet', the "
    "reason shown in the test.")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "in": lambda value, bar: bar[0] <= value <= bar[1]}
_SIGNS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥", "in": "in"}


def verdict(passed: bool, *, precondition: bool = True, negligible: bool = False) -> str:
    """The one verdict rule (:data:`VERDICT_RULE`): one of the four :data:`VERDICTS`.

    Args:
        passed: the claim's test holds on this model.
        precondition: the model is in the regime the claim is about (and its test can be run: see
            :func:`untestable`); False gives "not testable here".
        negligible: the effect, though real, is below the claim's negligible bar (only read when ``passed``).

    Raises:
        TypeError: an argument that is not True or False (a number is judged by :func:`claim_row`).
    """
    given = {"passed": passed, "precondition": precondition, "negligible": negligible}
    wrong = [f"{name}={flag!r}" for name, flag in given.items() if not isinstance(flag, bool)]
    if wrong:
        raise TypeError(f"verdict takes True or False, got {', '.join(wrong)}: judge a number with claim_row, which "
                        "makes a non-finite one 'not testable here'")
    if not precondition:
        return "not testable here"
    if not passed:
        return "not reproduced"
    return "reproduced but negligible" if negligible else "reproduced"


def untestable(value, op: str, bar) -> str | None:
    """Why ``value op bar`` cannot be tested: a value or bar (either end of an ``in`` band) that is NaN or infinite;
    None when it can (a None value, not measured, is left to the caller)."""
    ends = (("the band's low end", bar[0]), ("the band's high end", bar[1])) if op == "in" else (("the bar", bar),)
    for name, number in (("the measurement", value), *ends):
        if number is not None and not math.isfinite(number):
            return f"{name} is {'NaN' if math.isnan(number) else 'infinite'}"
    return None


def holds(value, op: str, bar) -> bool:
    """``value op bar`` (``op`` one of ``<, <=, >, >=, in``; ``in`` takes a (low, high) bar); False for None and
    wherever :func:`untestable` gives a reason."""
    return value is not None and untestable(value, op, bar) is None and bool(_OPS[op](value, bar))


def _test_text(value, op: str, bar) -> str:
    def number(x):
        return f"{x:.4g}"

    shown = f"[{number(bar[0])}, {number(bar[1])}]" if op == "in" else number(bar)
    if value is None:
        return "—"
    reason = untestable(value, op, bar)
    outcome = f"cannot be tested ({reason})" if reason else "yes" if holds(value, op, bar) else "no"
    return f"{number(value)} {_SIGNS[op]} {shown}: {outcome}"


def _plain(x):
    """A glue-safe value: Python floats, lists for tuples (so the glued repr is a literal)."""
    if isinstance(x, (tuple, list)):
        return [_plain(item) for item in x]
    return None if x is None else float(x)


def _claim_verdict(value, op: str, bar, negligible, preconditions_met: bool) -> str:
    """:func:`verdict` of a claim's numbers: "not testable here" without a value, with a non-finite number (its
    own test's or the negligible test's) or under an unmet precondition."""
    testable = (preconditions_met and value is not None and untestable(value, op, bar) is None
                and (negligible is None or untestable(*negligible) is None))
    small = negligible is not None and holds(*negligible)
    return verdict(holds(value, op, bar), precondition=testable, negligible=small)


def precondition_row(condition: str, *, paper: str, ours: str, value, op: str, bar) -> dict:
    """A precondition row: is this model in the regime the following claims are about? Verdict "met"/"unmet"
    ("unmet" too where the value or bar is not finite, the reason in the test).

    Args:
        condition: what the regime is, in words.
        paper, ours: what the page shows in the paper's and our column.
        value, op, bar: the test, ``value op bar`` (see :func:`holds`).
    """
    met = holds(value, op, bar)
    return {"claim": f"precondition: {condition}", "paper": paper, "ours": ours, "test": _test_text(value, op, bar),
            "verdict": PRECONDITION_WORDS[0] if met else PRECONDITION_WORDS[1], "kind": "precondition",
            "value": _plain(value), "op": op, "bar": _plain(bar), "requires": [], "negligible": None}


def claim_row(claim: str, *, paper: str, ours: str, value, op: str, bar, requires: dict | list | None = None,
              negligible: tuple | None = None) -> dict:
    """A claim's verdict row, its verdict given by :func:`verdict` from the numbers it carries.

    Args:
        claim: the paper's claim, in words.
        paper, ours: what the page shows in the paper's and our column.
        value, op, bar: the test, ``value op bar``; a None value (not measured), or a value or bar that is not
            finite (the reason shown in the test), makes the claim not testable.
        requires: the :func:`precondition_row` (or a list of them) the claim depends on; None for a claim about any
            model.
        negligible: ``(value, op, bar)``: the effect is negligible where this holds.
    """
    requires = [] if requires is None else [requires] if isinstance(requires, dict) else list(requires)
    met = all(row["verdict"] == PRECONDITION_WORDS[0] for row in requires)
    test = _test_text(value, op, bar) + (f"; negligible if {_test_text(*negligible)}" if negligible else "")
    return {"claim": claim, "paper": paper, "ours": ours, "test": test,
            "verdict": _claim_verdict(value, op, bar, negligible, met), "kind": "claim",
            "value": _plain(value), "op": op, "bar": _plain(bar),
            "requires": [row["claim"] for row in requires],
            "negligible": None if negligible is None else [_plain(negligible[0]), negligible[1], _plain(negligible[2])]}


def rule_violations(rows: list[dict]) -> list[str]:
    """Each row whose verdict does not follow :data:`VERDICT_RULE` from the numbers it carries (empty: all do)."""
    problems, preconditions = [], {}
    for row in rows:
        value, op, bar = row["value"], row["op"], row["bar"]
        if row["kind"] == "precondition":
            expected = PRECONDITION_WORDS[0] if holds(value, op, bar) else PRECONDITION_WORDS[1]
            preconditions[row["claim"]] = expected == PRECONDITION_WORDS[0]
        elif any(name not in preconditions for name in row["requires"]):
            problems.append(f"{row['claim']!r} requires precondition rows above it: {row['requires']!r}")
            continue
        else:
            met = all(preconditions[name] for name in row["requires"])
            expected = _claim_verdict(value, op, bar, row["negligible"], met)
        if row["verdict"] != expected:
            problems.append(f"{row['claim']!r}: verdict {row['verdict']!r}, the rule gives {expected!r}")
    return problems


def verdict_table(rows: list[dict], caption: str):
    """Glues the verdict table (``verdict_table``, shown at the chapter's top) and its rows (``verdicts``).

    Raises:
        ValueError: a row breaks the rule (a programming error in the chapter).
    """
    from IPython.display import Markdown
    from myst_nb import glue

    problems = rule_violations(rows)
    if problems:
        raise ValueError("verdicts that do not follow the rule: " + "; ".join(problems))
    import pandas as pd

    table = pd.DataFrame(rows)[["claim", "paper", "ours", "test", "verdict"]]
    styler = table.style.hide(axis="index").set_caption(caption)
    glue("verdict_table", styler, display=False)
    glue("verdicts", rows, display=False)
    glue("verdict_rule", Markdown(f"**The rule.** {VERDICT_RULE}"), display=False)
    return styler


# ---------------------------------------------------------------------------------------------------
#                                             Provenance
# ---------------------------------------------------------------------------------------------------


_SESSION_CARDS: dict[str, dict] = {}  # this kernel's chapter: the sampler cards its provenance call declared


def provenance(bundle, parameters: dict, sampler_cards: dict[str, dict] | None = None) -> dict:
    """Displays and returns what produced this notebook: parameters, versions, model sha256, code commit, hardware,
    and the sampler card of every sampling configuration behind its numbers.

    Each field is shown once: the model by its resolved name, then every other parameter, then one row per card.
    The cards are this chapter's for :func:`glue_sampled`, which glues a number computed from samples naming one;
    ``tools/book.py execute`` adds those names to the record (``sampled_glues``, :func:`lift_provenance`).

    Args:
        bundle: the chapter's model.
        parameters: the chapter's parameters.
        sampler_cards: label → :func:`bottleneck_utils.sampling.sampler_card`, one per sampling configuration the
            chapter's numbers come from (a chapter that samples must pass at least one; a test reads every notebook).

    Raises:
        ValueError: a label that is not a non-empty string, or a card that :func:`sampler_card` did not build.
        TypeError: ``sampler_cards`` is not a dict.
    """
    from IPython.display import Markdown, display

    cards = check_sampler_cards(sampler_cards or {})
    record = {"parameters": parameters, "model": bundle.name, "model_sha256": bundle.sha256,
              "git_commit": git_commit(), "hardware": hardware(), "packages": package_versions(),
              "sampler_cards": cards, "sampled_glues": {}}
    rows = [f"| model | `{bundle.name}` |", f"| model sha256 | `{bundle.sha256}` |",
            f"| code commit that produced these outputs | `{record['git_commit']}` |",
            *(f"| {key} | `{value}` |" for key, value in record["hardware"].items()),
            *(f"| {key} | `{value!r}` |" for key, value in parameters.items() if key != "model"),
            *(f"| sampler card: {label} | {card_text(card)} |" for label, card in cards.items())]
    _SESSION_CARDS.clear()
    _SESSION_CARDS.update(cards)
    display(Markdown("| provenance | |\n|---|---|\n" + "\n".join(rows)), metadata={PROVENANCE_KEY: record})
    return record


def check_sampler_cards(cards: dict) -> dict[str, dict]:
    """``cards`` (label → sampler card) as plain dicts, or a one-line error naming the fix (TypeError: not a dict)."""
    if not isinstance(cards, dict):
        raise TypeError(f"sampler_cards must be a dict label → sampling.sampler_card(...), got {type(cards).__name__}")
    for label, card in cards.items():
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"each sampler card needs a non-empty label (str), got {label!r}")
        if not isinstance(card, dict) or tuple(card) != SAMPLER_CARD_KEYS:
            raise ValueError(f"sampler card {label!r} was not built by bottleneck_utils.sampling.sampler_card (its keys "
                             f"are {SAMPLER_CARD_KEYS}): build it with sampler_card(bundle, num_samples=..., "
                             "num_steps=..., cfg_scale=..., ...)")
    return {label: dict(card) for label, card in cards.items()}


def card_text(card: dict) -> str:
    """One line of a sampler card: solver, steps and NFE, CFG, precision, samples and the feature network."""
    family = "package sampler" if card["family"] is None else f"family {card['family']}"
    nfe = "adaptive NFE" if card["nfe"] is None else f"NFE {card['nfe']}"
    if card["guided"]:
        interval = "" if card["guidance_interval"] is None else " for t in [{:g}, {:g}]".format(*card["guidance_interval"])
        cfg = f"CFG {card['cfg_scale']:g} on {card['cfg_channels']} of {card['channels']} channels{interval}"
    else:
        cfg = f"no CFG (scale {card['cfg_scale']:g})"
    shift = "" if card["shift"] in (None, 1.0) else f", shift {card['shift']:g}"
    precision = f"transformer {card['transformer_precision']}" + (" (TF32 matmuls)" if card["tf32_matmul"] else "")
    precision += "" if card["vae_precision"] is None else f", VAE {card['vae_precision']}"
    scored = "no feature network" if card["feature_network"] is None else card["feature_network"]
    scored += "" if card["fid_mode"] is None else f", FID mode {card['fid_mode']}"
    return (f"{card['model']} on {card['device']}: {family}, {card['solver']}, {card['num_steps']} steps ({nfe}), "
            f"{cfg}{shift}; {precision}; {card['num_samples']:,} samples; {scored}")


def glue_sampled(name: str, value, card, display: bool = False) -> None:
    """myst-nb's ``glue`` for a number computed from samples: it names the sampler card(s) it came from.

    Args:
        name, value, display: as myst-nb's ``glue``.
        card: the label of a card this chapter's :func:`provenance` declared, or the card itself; a list of them for
            a value computed from several sampling configurations (not empty).

    The glued output carries ``{name, card: [labels]}`` in its metadata (:data:`SAMPLED_KEY`), which
    :func:`lift_provenance` lists in the chapter's record (``sampled_glues``: name → labels). A test refuses a
    sampling chapter that glues a value computed from samples with plain ``glue``.

    Raises:
        ValueError: a card that is not among this chapter's provenance cards (or no provenance declared any), or an
            empty list.
    """
    import IPython.core.formatters
    from IPython.display import display as show
    from myst_nb.ext.glue import GLUE_PREFIX

    cards = list(card) if isinstance(card, (list, tuple)) else [card]
    if not cards:
        raise ValueError(f"glue_sampled({name!r}) needs at least one sampler card; a value from no samples is glued "
                         "with plain glue")
    labels = [_card_label(name, each) for each in cards]
    mimebundle, metadata = IPython.core.formatters.format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata |= {"scrapbook": {"name": name, "mime_prefix": prefix}, SAMPLED_KEY: {"name": name, "cards": labels}}
    show({prefix + key: data for key, data in mimebundle.items()}, raw=True, metadata=metadata)


def _card_label(name: str, card) -> str:
    """The label under which this chapter's provenance declared ``card`` (a label or a card), or a ValueError."""
    label = card if isinstance(card, str) else next((key for key, known in _SESSION_CARDS.items() if known == card),
                                                    None)
    if label not in _SESSION_CARDS:
        known = sorted(_SESSION_CARDS) or "none"
        shown = repr(card) if isinstance(card, str) else "this card"
        raise ValueError(f"glue_sampled({name!r}): {shown} is not among this chapter's sampler cards ({known}): pass "
                         "it to report.provenance(..., sampler_cards={label: sampling.sampler_card(...)})")
    return label


def lift_provenance(notebook) -> None:
    """Copies the record that :func:`provenance` attached to an output into the notebook's own metadata, with the
    name and card label of every value :func:`glue_sampled` glued (``sampled_glues``)."""
    outputs = [output.get("metadata", {}) for cell in notebook.cells for output in cell.get("outputs", [])]
    record = next((metadata[PROVENANCE_KEY] for metadata in outputs if PROVENANCE_KEY in metadata), None)
    if record is not None:
        sampled = {metadata[SAMPLED_KEY]["name"]: metadata[SAMPLED_KEY]["cards"] for metadata in outputs
                   if SAMPLED_KEY in metadata}
        notebook.metadata[PROVENANCE_KEY] = dict(record) | {"sampled_glues": sampled}


def chapters() -> list[str]:
    """The executed chapters in the book's order: the ``book/<name>`` entries of ``_toc.yml`` with a notebook source."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for part in toc["parts"] for entry in part["chapters"]]
    return [name for name in (Path(file).name for file in files) if (ROOT / "notebooks" / f"{name}.md").is_file()]


def chapter_provenance(names: list[str]) -> dict[str, dict]:
    """The provenance record of each executed chapter ``book/<name>.ipynb``; raises if one is missing."""
    import nbformat

    records = {}
    for name in names:
        path = BOOK_DIR / f"{name}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: execute the chapters first (make execute)")
        records[name] = nbformat.read(path, as_version=4).metadata.get(PROVENANCE_KEY)
    missing = [name for name, record in records.items() if record is None]
    if missing:
        raise ValueError(f"executed notebooks without provenance metadata: {missing}; re-execute them (make execute)")
    return records


def parameter_count(bundle) -> int | None:
    """The number of weights of the bundle's denoiser (None for an embedder-only checkpoint)."""
    network = getattr(bundle, "transformer", None)
    return None if network is None else sum(p.numel() for p in network.parameters())
