"""``progress_gsd.png``: GSD's per-epoch figures, written beside nnU-Net's ``progress.png``."""
from __future__ import annotations

import os
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_gsd_progress(logged: Dict[str, List[float]], output_folder: str) -> None:
    """Loss terms; R(e) and the mean GDA weight; truth diagnostics when the dataset has clean labels."""
    # nnU-Net's own plot sets a global seaborn style with huge fonts; do not inherit it
    with plt.style.context("default"):
        _plot(logged, output_folder)


def _plot(logged: Dict[str, List[float]], output_folder: str) -> None:
    epochs = range(len(logged.get("gsd_retention", [])))
    if len(epochs) == 0:
        return
    truth_keys = [k for k in ("gsd_selection_precision", "gsd_refined_accuracy", "gsd_noisy_accuracy",
                              "gsd_noise_rate_selected", "gsd_noise_rate_rejected")
                  if len(logged.get(k, [])) == len(epochs)]
    rows = 3 if truth_keys else 2
    fig, axes = plt.subplots(rows, 1, figsize=(10, 4 * rows), sharex=True)
    ax = axes[0]
    for key, label in (("train_losses", "L_total"), ("gsd_loss_gda", "L_GDA"), ("gsd_loss_kt", "L_KT"),
                       ("gsd_loss_cor", "L_cor")):
        values = logged.get(key, [])[: len(epochs)]
        if len(values) == len(epochs):
            ax.plot(epochs, values, label=label)
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax = axes[1]
    ax.plot(epochs, logged["gsd_retention"], label="R(e) (kept fraction)", color="k")
    ax.set_ylabel("R(e)")
    ax.legend(loc="lower left")
    ax2 = ax.twinx()
    ax2.plot(epochs, logged["gsd_mean_weight"][: len(epochs)], label="mean GDA weight", color="tab:orange")
    ax2.set_ylabel("mean W(e)")
    ax2.legend(loc="upper right")
    if truth_keys:
        ax = axes[2]
        for key in truth_keys:
            ax.plot(epochs, logged[key], label=key.removeprefix("gsd_"))
        ax.set_ylabel("vs clean labels")
        ax.legend(loc="center right", fontsize="small")
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    tmp = os.path.join(output_folder, "progress_gsd.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, os.path.join(output_folder, "progress_gsd.png"))
