"""The notes that say when a comparison cannot be trusted (cli/trust.py)."""

from __future__ import annotations

import pytest

from fusedfocal.cli.store import trust


def sel(best, trained, stopped=False):
    return {"best_epoch": best, "epochs_trained": trained, "stopped_early": stopped}


def dense(name, macro, micro, sd=None, selections=(sel(5, 5),)):
    def tree(ma, mi):
        return {"global": {"macro": {"f1": ma}, "micro": {"f1": mi}}}
    r = {"name": name, "metrics": tree(macro, micro), "metrics_sd": tree(*sd) if sd else None}
    if len(selections) > 1:
        r["per_seed"] = [{"selection": s} for s in selections]
    else:
        r["selection"] = selections[0]
    return r


def test_budget_warning_when_every_run_kept_its_last_epoch():
    rs = [dense("bce", 0.40, 0.85), dense("focal", 0.45, 0.85)]
    notes = trust.comparison_warnings(rs, max_epochs=5)
    assert len(notes) == 1 and notes[0].startswith("Budget too short: every run (2) kept its last epoch (5 of at "
                                                   "most 5)") and "--epochs" in notes[0]


@pytest.mark.parametrize("selections", [
    [sel(3, 5)],                      # one run's best epoch was earlier
    [sel(4, 4, stopped=True)],        # early stopping ended it: it had stopped improving
], ids=["earlier-best", "stopped-early"])
def test_no_budget_warning_when_one_run_had_stopped_improving(selections):
    rs = [dense("bce", 0.40, 0.85), dense("focal", 0.45, 0.85, selections=selections)]
    assert trust.budget_warning(rs, 5) is None


def test_budget_warning_over_seeds_needs_every_seed():
    last = (sel(5, 5), sel(5, 5), sel(5, 5))
    rs = [dense("bce", 0.4, 0.8, sd=(0.01, 0.01), selections=last),
          dense("focal", 0.5, 0.8, sd=(0.01, 0.01), selections=last)]
    assert "every run (6)" in trust.budget_warning(rs, 5)
    rs[1]["per_seed"][2]["selection"] = sel(2, 5)
    assert trust.budget_warning(rs, 5) is None


def test_seed_noise_names_the_close_pairs_only():
    spread = (sel(2, 5), sel(3, 5))
    rs = [dense("bce", 0.410, 0.853, sd=(0.013, 0.002), selections=spread),
          dense("focal", 0.414, 0.855, sd=(0.019, 0.004), selections=spread),
          dense("cb", 0.364, 0.748, sd=(0.010, 0.003), selections=spread)]
    notes = trust.comparison_warnings(rs, max_epochs=5)
    assert len(notes) == 2
    macro, micro = notes
    assert macro.startswith("Seed noise in macro-F1: focal 41.4 vs bce 41.0 (gap 0.4, sd up to 1.9)")
    assert "cb" not in macro  # 4.6 points below bce, sd 1.3: a real gap
    assert micro.startswith("Seed noise in micro-F1: focal 85.5 vs bce 85.3 (gap 0.2, sd up to 0.4)")


def test_no_seed_note_for_one_seed_or_clear_gaps():
    spread = (sel(2, 5), sel(3, 5))
    assert trust.comparison_warnings([dense("bce", 0.40, 0.85, selections=(sel(2, 5),)),
                                      dense("focal", 0.401, 0.851, selections=(sel(2, 5),))], max_epochs=5) == []
    rs = [dense("bce", 0.40, 0.80, sd=(0.01, 0.01), selections=spread),
          dense("focal", 0.45, 0.85, sd=(0.01, 0.01), selections=spread)]
    assert trust.comparison_warnings(rs, max_epochs=5) == []


def test_fused_comparison_uses_p_at_1():
    spread = (sel(2, 5), sel(3, 5))
    rs = [{"name": n, "metrics": {"p@1": m, "psp@5": 0.1}, "metrics_sd": {"p@1": s, "psp@5": 0.0},
           "per_seed": [{"selection": x} for x in spread]} for n, m, s in (("bce", 0.876, 0.01),
                                                                          ("la", 0.861, 0.02))]
    notes = trust.comparison_warnings(rs, max_epochs=5, fused=True)
    assert len(notes) == 1 and notes[0].startswith("Seed noise in P@1: bce 87.6 vs la 86.1")


def test_truncation_is_counted_and_warned(capsys):
    """--max-length cuts documents only with a count and a warning (prepare.truncation_report)."""
    from fusedfocal import data
    from fusedfocal.cli.stages.prepare import truncation_report

    texts = ["one two three", "a b c d e f g h i j k l m n o p", "x"]
    config = data.PipelineConfig(max_length=8, batch_size=2, vocab_size=200)
    pipe = data.TextPipeline.from_training_data(config, texts * 5, [["a"]] * 15)
    lengths = pipe.token_lengths(texts)
    full = [int((pipe.tokenize([t]).numpy() != 0).sum()) for t in texts]
    assert lengths[0] == full[0] and lengths[2] == full[2]  # short texts: nothing cut
    assert lengths[1] > 8 and full[1] == 8                  # the long one is cut to max_length
    rep = truncation_report(pipe, texts, 8)
    assert rep["truncated"] == 1 and rep["documents"] == 3 and rep["share"] == pytest.approx(1 / 3, abs=1e-4)
    err = capsys.readouterr().err
    assert "--max-length 8 truncates 1 of 3 training documents (33.3%" in err
    assert truncation_report(pipe, texts[:1], 8)["truncated"] == 0
    assert "truncates" not in capsys.readouterr().err
