"""The privacy audit as a markdown table (``fedkd audit``, ``fedkd report --audit``): each noise
multiplier with the epsilon it costs and both attacks' numbers with their bootstrap 95% CIs."""

from __future__ import annotations

from fedkd.config import ExperimentConfig
from fedkd.privacy import PrivacyLedger, release_rows


def _ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def audit_markdown(audit: dict) -> str:
    """Both audits as one markdown table per noise multiplier (values with bootstrap 95% CIs) and
    the epsilon each multiplier costs under the audited config (its rounds, sensitivity model)."""
    cfg = ExperimentConfig.from_run_config(audit["config"])

    def epsilon(multiplier: float) -> float:
        privacy = cfg.with_overrides({"mechanism": "gaussian", "noise-multiplier": multiplier}).privacy
        return PrivacyLedger(privacy, release_rows(cfg)).epsilon_for(cfg.run.rounds)

    labels = {r["noise_multiplier"]: r for r in audit["label_distribution"]}
    head = ["noise multiplier", f"epsilon ({cfg.privacy.sensitivity_model}, {cfg.run.rounds} rounds)"]
    head += ["confidence AUC", "label-only AUC", "release acc", "label TV error", "blind TV (prior)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for row in sorted(audit["membership"], key=lambda r: r["noise_multiplier"]):
        m = row["noise_multiplier"]
        tv = labels[m]
        cells = ["none" if m == 0 else f"{m:g}", "inf" if m == 0 else f"{epsilon(m):.3g}"]
        cells += [
            _ci(row["auc"], row["auc_ci"]),
            _ci(row["label_only_auc"], row["label_only_ci"]),
            f"{row['release_accuracy']:.3f}",
            _ci(tv["tv"], tv["tv_ci"]),
            _ci(tv["tv_prior"], tv["tv_prior_ci"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    first = audit["membership"][0]
    no_model = _ci(first["class_frequency_auc"], first["class_frequency_ci"])
    note = (
        f"Membership: {first['members']} members vs {first['non_members']} held-out non-members, pooled "
        f"over {audit['label_distribution'][0]['clients']} clients (95% CIs resample clients; a "
        f"no-model attack by class frequency: AUC {no_model}); "
        "label TV: 0 = the release gives the "
        "client's label histogram exactly (blind uniform guess: "
        f"{audit['label_distribution'][0]['tv_uniform']:.3f}); delta={cfg.privacy.delta:g}."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"
