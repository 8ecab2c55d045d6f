"""What each fusion algorithm is, apart from what it computes: what its clients upload, whether
it personalises, whether its uploads can be compressed, its paper and the config keys only it
reads. One card per registered name.

The algorithms (fedkd/fusion/) take these flags from their card, validation refuses compression
by the card's own reason, and `fedkd algorithms` prints the cards: one place, so the listing
and validation cannot disagree. Pure data outside the fusion package, so that listing the
algorithms imports neither numpy nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from enum import StrEnum

from fedkd.config_types import allowed

# -- settings: each algorithm's own config keys, one frozen dataclass per group of keys. Every
# field carries a comment saying what it means and, for a number, its range (``allowed``); the
# fusion section of the config (fedkd/config.py) is composed of these, and `fedkd keys --toml`
# prints each comment beside its key (fedkd/config_doc.py reads them from here).


@dataclass(frozen=True)
class KnFuSettings:
    divergence: str = "kl"  # KnFu: divergence between two clients' EPDs (kl, js) or predictions (cosine)
    neighbour_rule: str = "mean-threshold"  # KnFu: which clients count as semantic neighbours
    # KnFu, neighbour-rule fixed-threshold: largest divergence of a neighbour.
    neighbour_threshold: float = allowed(0.1, ">= 0")
    neighbour_top_m: int = allowed(3, ">= 1")  # KnFu, neighbour-rule top-m: closest clients kept
    beta: float = allowed(10.0, ">= 0")  # KnFu: weights = softmax(-beta * divergence)
    include_self: bool = True  # KnFu: a client is its own neighbour (divergence 0); allowed: true, false


@dataclass(frozen=True)
class DSFLSettings:
    dsfl_temperature: float = allowed(0.1, "> 0")  # DS-FL entropy reduction (lower: sharper)


@dataclass(frozen=True)
class FedMDSettings:
    # FedMD: transfer rows drawn afresh each round for consensus/digest.
    fedmd_subset: int = allowed(0, ">= 0", "0: all; at most transfer-size")


@dataclass(frozen=True)
class FedMDPretrainSettings:
    # FedMD (not fedmd-nopretrain): epochs of its transfer-learning phase, supervised on the
    # labelled transfer set before a client's first round, on top of pretrain-epochs.
    fedmd_pretrain_epochs: int = allowed(20, ">= 0")


@dataclass(frozen=True)
class GuardSettings:
    guard_fraction: float = allowed(0.1, "0 < value < 1")  # knfu-guard: share of private data held out
    # knfu-guard: allowed drop in guard accuracy before rollback
    guard_tolerance: float = allowed(0.0, ">= 0")


@dataclass(frozen=True)
class KTPFLSettings:
    # KT-pFL: step size on the knowledge-coefficient matrix C: adaptive (the reference code's: per
    # row, a power of 5 that puts the mean absolute step in [0.01, 0.05)) | fixed (ktpfl-step-size).
    ktpfl_step_rule: str = "adaptive"
    # KT-pFL, ktpfl-step-rule fixed: step size of each gradient step on C.
    ktpfl_step_size: float = allowed(0.1, "> 0")
    # KT-pFL: how a row of C returns to the simplex after a step: softmax (the reference code's
    # softmax(5 c)) | projection (Euclidean projection onto the simplex).
    ktpfl_simplex: str = "softmax"
    # KT-pFL: rho of the regulariser rho * ||C - 1/K||^2 (pulls C towards uniform).
    ktpfl_rho: float = allowed(0.7, ">= 0")
    ktpfl_steps: int = allowed(1, ">= 1")  # KT-pFL: gradient steps on C per round (server side)


@dataclass(frozen=True)
class FedDFSettings:
    # FedDF: server distillation steps (mini-batches of batch-size transfer rows) per architecture
    # and round.
    feddf_server_steps: int = allowed(100, ">= 0", "0: per-architecture FedAvg only")


@dataclass(frozen=True)
class SelectiveFDSettings:
    # Selective-FD, client side: the share of its own private samples (leave-one-out) a client's
    # density-ratio selector would pass; a transfer row is uploaded if its ratio is at least theirs
    # at quantile 1 - this.
    selective_quantile: float = allowed(0.75, "0 < value <= 1")
    # Selective-FD, client side: Gaussian kernel width of the density-ratio estimate, as a multiple
    # of the median distance between private and transfer inputs.
    selective_kernel_width: float = allowed(1.0, "> 0")
    # Selective-FD, server side: rows whose ensemble prediction has normalised entropy (entropy /
    # ln C) above this get no target.
    selective_entropy: float = allowed(0.9, "0 < value <= 1", "1: keep every row")


@dataclass(frozen=True)
class FDSettings:
    # FD: weight of the distillation term towards the peers' mean soft prediction for a sample's
    # label (KL at temperature, T^2-scaled), added to cross-entropy in every private step.
    fd_weight: float = allowed(1.0, ">= 0")


@dataclass(frozen=True)
class FedProtoSettings:
    # FedProto: weight of the squared distance between a sample's representation and the global
    # prototype of its label (mean over entries), added to cross-entropy in every private step.
    fedproto_weight: float = allowed(1.0, ">= 0")


def setting_keys(settings: tuple[type, ...]) -> tuple[str, ...]:
    """The kebab-case config keys of these settings dataclasses, in field order."""
    return tuple(f.name.replace("_", "-") for cls in settings for f in fields(cls))


class Uploads(StrEnum):
    """What a client sends after local training. The value is its name on the wire (train.local's
    ``upload`` setting) and picks the server's exchange (server/exchanges.py); the class kinds are
    per-class statistics of private data, with no transfer set (the data-free family)."""

    PREDICTIONS = "predictions"
    WEIGHTS = "weights"
    WEIGHTS_AND_PREDICTIONS = "weights+predictions"
    NOTHING = "nothing"
    CLASS_PREDICTIONS = "class-predictions"
    CLASS_PROTOTYPES = "class-prototypes"

    @classmethod
    def named(cls, value: object) -> Uploads:
        """The kind called ``value``; anything else is one line naming it and the kinds allowed."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(kind.value for kind in cls)
            raise ValueError(f"upload kind {value!r} is unknown; allowed: {allowed}") from None

    @property
    def predictions(self) -> bool:
        """Soft predictions on the transfer set."""
        return self in (Uploads.PREDICTIONS, Uploads.WEIGHTS_AND_PREDICTIONS)

    @property
    def weights(self) -> bool:
        return self in (Uploads.WEIGHTS, Uploads.WEIGHTS_AND_PREDICTIONS)

    @property
    def class_knowledge(self) -> bool:
        return self in (Uploads.CLASS_PREDICTIONS, Uploads.CLASS_PROTOTYPES)

    @property
    def anything(self) -> bool:
        """Whether a client makes an upload at all (``local`` makes none)."""
        return self is not Uploads.NOTHING


@dataclass(frozen=True)
class Card:
    uploads: Uploads = Uploads.PREDICTIONS  # a plugin may give the kind's name ("nothing")
    sparse: bool = False  # clients upload only the rows ``upload_mask`` keeps (mask + values)
    personalised: bool = False  # each client gets its own target or model
    paper: str = ""  # where the method comes from
    # its own config keys: settings dataclasses (the built-ins' above; a plugin's its own, whose
    # keys fedkd accepts while the plugin is installed: fedkd/config.py plugin_options)
    settings: tuple[type, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "uploads", Uploads.named(self.uploads))
        for cls in self.settings:
            if not (isinstance(cls, type) and is_dataclass(cls)):
                raise ValueError(
                    f"card setting {cls!r} is not a dataclass; allowed: a frozen dataclass of keys"
                )

    @property
    def keys(self) -> tuple[str, ...]:
        """The config keys only this algorithm reads."""
        return setting_keys(self.settings)

    @property
    def uploads_predictions(self) -> bool:
        return self.uploads.predictions

    @property
    def uploads_weights(self) -> bool:
        return self.uploads.weights

    @property
    def uploads_class_knowledge(self) -> bool:
        """Per-class statistics of the private data (C rows), no transfer set: the data-free family."""
        return self.uploads.class_knowledge

    @property
    def noisable(self) -> bool:
        """Whether the privacy mechanism can noise the uploads: rows on the simplex."""
        return self.uploads in (Uploads.PREDICTIONS, Uploads.CLASS_PREDICTIONS)

    def upload_summary(self) -> str:
        """What one client sends after local training, in words."""
        if self.uploads.class_knowledge:
            return CLASS_UPLOADS[self.uploads]
        if self.uploads is Uploads.PREDICTIONS:
            return "sparse predictions (mask + values)" if self.sparse else "predictions"
        return self.uploads.value.replace("+", " + ")

    def compression_refusal(self) -> str | None:
        """Why ``compression`` cannot apply to this algorithm's uploads; None where it can."""
        if self.uploads_class_knowledge:
            return f"it uploads {self.upload_summary()}, and compression acts on transfer-set predictions"
        if not self.uploads_predictions:
            return f"it uploads {self.upload_summary()}, and compression acts on prediction uploads"
        if self.uploads_weights:
            return "its teacher must be what the server would compute from the uploaded models"
        return None

    @property
    def compressible(self) -> bool:
        return self.compression_refusal() is None


CLASS_UPLOADS = {  # upload kind -> what a client sends, in words
    Uploads.CLASS_PREDICTIONS: "per-class mean predictions (C x C)",
    Uploads.CLASS_PROTOTYPES: "per-class prototypes (C x D) + class counts",
}
CARDS: dict[str, Card] = {
    "dsfl": Card(paper="Itahara et al. 2021, DS-FL (IEEE TMC, arXiv 2008.06180)", settings=(DSFLSettings,)),
    "fd": Card(
        uploads=Uploads.CLASS_PREDICTIONS,
        personalised=True,
        paper="Jeong et al. 2018, FD (NeurIPS MLPCD workshop, arXiv 1811.11479); data-free",
        settings=(FDSettings,),
    ),
    "fedavg": Card(uploads=Uploads.WEIGHTS, paper="McMahan et al. 2017, FedAvg (AISTATS, arXiv 1602.05629)"),
    "feddf": Card(
        uploads=Uploads.WEIGHTS_AND_PREDICTIONS,
        paper="Lin et al. 2020, FedDF (NeurIPS, arXiv 2006.07242)",
        settings=(FedDFSettings,),
    ),
    "fedproto": Card(
        uploads=Uploads.CLASS_PROTOTYPES,
        paper="Tan et al. 2022, FedProto (AAAI, arXiv 2105.00243); data-free",
        settings=(FedProtoSettings,),
    ),
    "fedmd": Card(
        paper="Li & Wang 2019, FedMD (arXiv 1910.03581)", settings=(FedMDSettings, FedMDPretrainSettings)
    ),
    "fedmd-nopretrain": Card(
        paper="Li & Wang 2019, FedMD (arXiv 1910.03581); without its transfer-learning phase",
        settings=(FedMDSettings,),
    ),
    "knfu": Card(
        personalised=True,
        paper="KnFu, arXiv 2403.11892 (our reading: docs/design.md)",
        settings=(KnFuSettings,),
    ),
    "knfu-guard": Card(
        personalised=True,
        paper="KnFu (arXiv 2403.11892) + client-side rollback (fedkd)",
        settings=(KnFuSettings, GuardSettings),
    ),
    "kt-pfl": Card(
        personalised=True,
        paper="Zhang et al. 2021, KT-pFL (NeurIPS, arXiv 2111.02862)",
        settings=(KTPFLSettings,),
    ),
    "local": Card(
        uploads=Uploads.NOTHING, personalised=True, paper="no exchange: the step-matched reference"
    ),
    "selective-fd": Card(
        sparse=True,
        paper="Shao et al. 2024, Selective-FD (Nature Communications, arXiv 2304.01731)",
        settings=(SelectiveFDSettings,),
    ),
    "self-distill": Card(
        personalised=True, paper="control (fedkd): the same distillation steps with no peer knowledge"
    ),
}


# the fusion section's algorithm keys, in the order `fedkd keys` lists them: every built-in card's
# settings, each once
BUILTIN_SETTINGS: tuple[type, ...] = tuple(
    dict.fromkeys(cls for card in CARDS.values() for cls in card.settings)
)
