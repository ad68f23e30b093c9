"""The viewer's data, the exports, comparable t-SNE layouts, figure legibility and the CLI's help,
with known answers on tiny arrays (no browser: tests/test_browser.py drives one)."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from alviz import curves, embed, plots
from alviz.palette import CIFAR100_SUPERCLASS, class_colors, class_groups
from alviz.report import document, export, viewer
from alviz.report.headline import headline_rows
from browser_util import synthetic_thumbs, synthetic_tsne


# ------------------------------------------------------------------- layouts and neighbours
def test_centroid_shift_known_answers():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    ref = np.r_[rng.normal(size=(50, 2)) + [-3, 0], rng.normal(size=(50, 2)) + [3, 0]]
    assert embed.centroid_shift(ref, ref, labels) == 0.0
    radius = np.sqrt(((ref - ref.mean(0)) ** 2).sum(1).mean())
    moved = ref.copy()
    moved[labels == 1] += [0, 2 * radius]  # class 1 moves by two radii, class 0 stays
    assert embed.centroid_shift(moved, ref, labels) == pytest.approx(1.0)
    swapped = ref.copy()
    swapped[:, 0] *= -1  # both classes trade places
    assert embed.centroid_shift(swapped, ref, labels) > 1.5
    with pytest.raises(ValueError, match="same points"):
        embed.centroid_shift(ref[:10], ref, labels)


def test_neighbours_known_answer():
    Z = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])
    nn = embed.neighbours(Z, 2)
    assert nn.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1], [3, 2]]
    assert embed.neighbours(Z, 10).shape == (5, 4)  # at most N - 1


def test_tsne_from_a_reference_keeps_classes_in_place():
    """A second layer of the same classes, embedded from the first layer's layout, puts each class
    where the first one has it; the same layer embedded from PCA lands elsewhere by rotation."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 30)
    centres = rng.normal(size=(4, 20)) * 6
    Z1 = centres[labels] + rng.normal(size=(120, 20))
    Z2 = (centres[labels] + rng.normal(size=(120, 20))) @ np.linalg.qr(rng.normal(size=(20, 20)))[0]
    ref = embed.tsne(Z1, perplexity=10, seed=0, n_jobs=1, n_iter=250)
    from_ref = embed.tsne(Z2, perplexity=10, seed=0, n_jobs=1, n_iter=250, init=ref)
    assert embed.centroid_shift(embed.procrustes_align(from_ref, ref, scale=True), ref, labels) < 0.25
    with pytest.raises(ValueError, match="init must be"):
        embed.tsne(Z2, perplexity=10, n_jobs=1, init=ref[:5])


# ------------------------------------------------------------------------- viewer payload
def test_payload_order_predictions_neighbours_and_sprite():
    data = synthetic_tsne(n=30, classes=3, cols=2, k=4)
    thumbs = synthetic_thumbs(30, 4, 5, 3)
    p = viewer.viewer_payload(data, ["a", "b", "c"], class_colors(3), thumbs, seed=3)
    assert sorted(p["order"]) == list(range(30)) and p["order"] != list(range(30))
    assert p["pred"]["AL"]["pred"] == data["pred"]["al"][0].tolist()
    assert len(p["panels"][0]["nn"]) == 30 * 4 and p["panels"][0]["k"] == 4
    assert p["thumb"]["cols"] == 6 and p["thumb"]["src"].startswith("data:image/jpeg;base64,")
    grey = viewer.viewer_payload(data, ["a", "b", "c"], class_colors(3), thumbs[..., :1])
    assert grey["thumb"]["src"].startswith("data:image/png;base64,")
    img, cols = viewer.sprite(thumbs)
    assert cols == 6 and img.shape == (5 * 4, 6 * 5, 3)
    np.testing.assert_array_equal(img[4:8, 5:10], thumbs[7])  # row 1, column 1
    assert (img[16:, 0:] == 255).all() or img.shape[0] == 20  # the last row's empty tiles are white


# ----------------------------------------------------------------------------------- exports
def test_exports_csv_npz_and_projector_bundle(tmp_path):
    data = synthetic_tsne(n=12, classes=3, cols=2, k=3)
    data["Z"] = {k: np.arange(12 * 3, dtype=np.float32).reshape(12, 3) + i for i, k in enumerate(data["panels"])}
    names = ["x", "y", "z"]
    folder = export.write_exports(tmp_path / "export", data, names, synthetic_thumbs(12, 4, 4, 1), lambda *a: None)
    rows = list(csv.DictReader(io.StringIO((folder / "tsne_points.csv").read_text())))
    assert len(rows) == 4 * 12 and list(rows[0]) == export.POINT_COLUMNS
    r = rows[13]  # panel 2 (al layer2), sample 1
    assert r["method"] == "al" and r["layer"] == "layer2" and int(r["sample_id"]) == int(data["ids"][1])
    assert float(r["x"]) == pytest.approx(data["panels"][("al", 2.0)][1, 0])
    assert int(r["correct"]) == int(data["pred"]["al"][0][1] == data["labels"][1])
    z = np.load(folder / "tsne_points.npz", allow_pickle=False)
    assert z["coords"].shape == (4, 12, 2) and z["class_names"].tolist() == names
    assert z["pred_bp"].tolist() == data["pred"]["bp"][0].tolist()
    proj = folder / "projector"
    cfg = (proj / "projector_config.pbtxt").read_text()
    assert cfg.count("embeddings {") == 8 and "single_image_dim: 4" in cfg
    for path in [line.split('"')[1] for line in cfg.splitlines() if "_path" in line]:
        assert (proj / path).is_file(), path
    meta = (proj / "metadata.tsv").read_text().splitlines()
    assert len(meta) == 13 and meta[0].split("\t")[:3] == ["sample_id", "class", "label"]
    tensor = np.loadtxt(proj / "al_layer1.tsv", delimiter="\t")
    np.testing.assert_allclose(tensor, data["Z"][("al", 1.0)], rtol=1e-5)


# ---------------------------------------------------------------------------- report page
def test_table_headers_align_with_their_columns():
    text = document.html_table(["run", "seed", "acc"], [["al-seed0", "0", "0.91 ± 0.01"], ["bp", "1", "–"]])
    assert '<th class="l">run</th><th>seed</th><th>acc</th>' in text
    assert '<td class="l">al-seed0</td><td>0</td>' in text and text.startswith('<div class="table">')


def test_no_absolute_path_in_what_the_page_shows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    obj = {"path": "/home/someone/exp", "rel": "checkpoints/x", "ds": "npz:/data/my.npz",
           "inner": [str(tmp_path / "checkpoints" / "e")]}
    assert document.strip_paths(obj) == {"path": "exp", "rel": "checkpoints/x", "ds": "npz:my.npz",
                                         "inner": ["checkpoints/e"]}


def test_figures_shown_at_one_text_scale():
    def png(width):
        return b"\x89PNG\r\n\x1a\n" + b"\0" * 8 + width.to_bytes(4, "big") + b"\0" * 8
    assert document.png_css_width(png(1005)) == round(1005 / 300 * 110)
    assert document.png_css_width(png(2070)) / document.png_css_width(png(1005)) == pytest.approx(2070 / 1005, 0.01)


def test_headline_table():
    rows = []
    for m, layer, v in (("al", "block1", 2.0), ("bp", "block1", 1.5)):
        for stat, val in (("mean", v), ("ci_low", v - 0.1), ("ci_high", v + 0.1), ("n", 3.0)):
            rows.append({"method": m, "layer": layer, "depth": 1, "on_path": True, "measure": "ratio",
                         "stat": stat, "value": val})
    head, body = headline_rows(rows)
    assert head == ["pos.", "layers", "measure", "AL", "BP"]
    assert body == [["1", "block1", "inter/intra", "2.000 [1.900, 2.100]", "1.500 [1.400, 1.600]"]]


# ------------------------------------------------------------------------------- figures
def _contrast(color) -> float:
    from matplotlib.colors import to_rgb

    def lum(c):
        c = np.asarray(to_rgb(c))
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]
    return 1.05 / (lum(color) + 0.05)


def _hist(method, seed, k=2, epochs=4):
    return {"method": method, "seed": seed, "depth": k, "history": [
        {"epoch": e, "test_acc": 0.5 + 0.1 * e + 0.01 * seed,
         **({f"loss_assoc{j}": 1.0 / e for j in range(1, k + 1)} if method == "al" else {}),
         **({f"loss_ae{j}": 2.0 / e for j in range(1, k + 1)} if method == "al" else {}),
         **({f"test_acc_exit{j}": 0.6 + 0.05 * j for j in range(1, k + 1)} if method == "al" else {})}
        for e in range(1, epochs + 1)]}


def test_lines_reach_3_to_1_contrast_and_epoch_axes_start_at_1():
    import matplotlib.pyplot as plt

    hist = [_hist("al", 0, k=6), _hist("bp", 0, k=6)]
    fig, axes = plt.subplots(3, 1)
    curves.training_curves(hist, ax=axes[0])
    curves.al_losses(hist, ax=axes[1])
    rows = [{"method": m, "seed": 0, "layer": f"l{d}", "depth": d, "role": "encoder" if d < 2 else "head",
             "measure": "ratio", "value": 1.0 + d} for m in ("al", "bp") for d in (1, 2, 3)]
    plots.measure_by_layer(rows, "ratio", ax=axes[2], reference=1.0)
    for ax in axes:
        for line in ax.get_lines():
            assert _contrast(line.get_color()) >= 3.0, line.get_color()
    assert axes[0].get_xlim()[0] == 1 and axes[1].get_xlim()[0] == 1
    assert "log scale" in axes[1].get_ylabel() and "higher is better" in axes[2].get_ylabel()
    plt.close(fig)


def test_no_legend_error_bars_without_error_bars():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    curves.exit_accuracy([_hist("al", 0), _hist("bp", 0)], ax=ax)  # one seed: no error bars
    assert ax.containers and not any(c.has_yerr for c in ax.containers)
    ax.cla()
    curves.exit_accuracy([_hist("al", 0), _hist("al", 1), _hist("bp", 0), _hist("bp", 1)], ax=ax)
    assert any(c.has_yerr for c in ax.containers)
    plt.close(fig)


def test_every_measure_panel_says_which_direction_is_better():
    import matplotlib.pyplot as plt

    rows = [{"method": m, "seed": 0, "layer": "l1", "depth": 1, "measure": meas, "value": 1.0}
            for m in ("al", "bp") for meas in ("ratio", "nc1")]
    fig = plt.figure()
    plots.measures_grid(rows, ["ratio", "nc1"], fig=fig, ncols=2)
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_visible()]
    assert labels == ["higher better", "lower better, log scale"]
    plt.close(fig)


def test_more_than_ten_classes_are_coloured_by_group():
    names = ["apple"] + [f"c{i}" for i in range(98)] + ["worm"]
    gnames, of = class_groups(names)
    assert len(gnames) == 20 and of == CIFAR100_SUPERCLASS
    assert all(of.count(g) == 5 for g in range(20))  # CIFAR-100: 5 classes per superclass
    colors = class_colors(100, of)
    assert len(set(colors)) == 20 and colors[0] == colors[of.index(of[0])]
    assert class_colors(10) == plots.PALETTE and class_groups([str(i) for i in range(10)]) is None
    gnames, of = class_groups([str(i) for i in range(25)])
    assert of[:4] == [0, 0, 1, 1] and gnames[-1] == "24"


def test_tsne_grid_draws_points_in_a_seeded_random_order():
    import matplotlib.pyplot as plt

    labels = np.repeat(np.arange(3), 20)
    Y = np.c_[labels, np.arange(60)].astype(float)
    fig = plots.tsne_grid({("AL", "1"): Y}, labels, row_names=["AL"], col_names=["1"], fig=plt.figure())
    drawn = fig.axes[0].collections[0].get_offsets()[:, 0]
    assert sorted(drawn) == sorted(labels) and list(drawn) != sorted(drawn)
    plt.close(fig)


# ----------------------------------------------------------------------------------- CLI
def _help(cli_main, capsys, *args):
    assert cli_main([*args, "--help"]) == 0
    return capsys.readouterr().out


def test_every_option_has_help_and_its_default(cli_main, capsys):
    import click

    from alviz.cli import cli

    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.name == "help":
                continue
            assert p.help, f"{name} {p.opts[0]}: no help text"
            shows = "[default:" in p.help or (p.show_default and p.default is not None) or p.is_flag \
                or (cmd.context_settings.get("show_default") and p.default is not None)
            assert shows or p.default not in (None, ()) or p.multiple, f"{name} {p.opts[0]}: default not shown"
        text = _help(cli_main, capsys, name)
        for opt in ("--epochs", "--batch-size", "--lr", "--seed"):
            if any(opt in p.opts for p in cmd.params):
                line = text[text.index(f"\n  {opt} "):].split("\n  -")[1]
                assert "default" in line, (name, opt, line)


def test_help_lists_every_data_set_and_whole_descriptions(cli_main, capsys):
    from alviz.cli import DATASETS_HELP
    from alviz.data import DATASET_NAMES

    assert [s.strip() for s in DATASETS_HELP.split(",")] == list(DATASET_NAMES)
    assert "cifar100-5k" in _help(cli_main, capsys, "train")
    top = _help(cli_main, capsys)
    commands = top[top.index("Commands:"):]
    assert "..." not in commands and "(default: all experiments under checkpoints/)" in " ".join(commands.split())
