"""What each fusion algorithm is, apart from what it computes: what its clients upload, whether
it personalises, whether its uploads can be compressed, its paper and the config keys only it
reads. One card per registered name.

The algorithms (fedkd/fusion/) take these flags from their card, validation refuses compression
by the card's own reason, and `fedkd algorithms` prints the cards: one place, so the listing
and validation cannot disagree. Pure data outside the fusion package, so that listing the
algorithms imports neither numpy nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
    settings: tuple[str, ...] = ()  # the config keys only this algorithm reads

    def __post_init__(self) -> None:
        object.__setattr__(self, "uploads", Uploads.named(self.uploads))

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
KNFU_SETTINGS = (
    "divergence",
    "neighbour-rule",
    "neighbour-threshold",
    "neighbour-top-m",
    "beta",
    "include-self",
)
CARDS: dict[str, Card] = {
    "dsfl": Card(
        paper="Itahara et al. 2021, DS-FL (IEEE TMC, arXiv 2008.06180)", settings=("dsfl-temperature",)
    ),
    "fd": Card(
        uploads=Uploads.CLASS_PREDICTIONS,
        personalised=True,
        paper="Jeong et al. 2018, FD (NeurIPS MLPCD workshop, arXiv 1811.11479); data-free",
        settings=("fd-weight",),
    ),
    "fedavg": Card(uploads=Uploads.WEIGHTS, paper="McMahan et al. 2017, FedAvg (AISTATS, arXiv 1602.05629)"),
    "feddf": Card(
        uploads=Uploads.WEIGHTS_AND_PREDICTIONS,
        paper="Lin et al. 2020, FedDF (NeurIPS, arXiv 2006.07242)",
        settings=("feddf-server-steps",),
    ),
    "fedproto": Card(
        uploads=Uploads.CLASS_PROTOTYPES,
        paper="Tan et al. 2022, FedProto (AAAI, arXiv 2105.00243); data-free",
        settings=("fedproto-weight",),
    ),
    "fedmd": Card(
        paper="Li & Wang 2019, FedMD (arXiv 1910.03581)", settings=("fedmd-subset", "fedmd-pretrain-epochs")
    ),
    "fedmd-nopretrain": Card(
        paper="Li & Wang 2019, FedMD (arXiv 1910.03581); without its transfer-learning phase",
        settings=("fedmd-subset",),
    ),
    "knfu": Card(
        personalised=True,
        paper="KnFu, arXiv 2403.11892 (our reading: docs/design.md)",
        settings=KNFU_SETTINGS,
    ),
    "knfu-guard": Card(
        personalised=True,
        paper="KnFu (arXiv 2403.11892) + client-side rollback (fedkd)",
        settings=(*KNFU_SETTINGS, "guard-fraction", "guard-tolerance"),
    ),
    "kt-pfl": Card(
        personalised=True,
        paper="Zhang et al. 2021, KT-pFL (NeurIPS, arXiv 2111.02862)",
        settings=("ktpfl-step-rule", "ktpfl-step-size", "ktpfl-simplex", "ktpfl-rho", "ktpfl-steps"),
    ),
    "local": Card(
        uploads=Uploads.NOTHING, personalised=True, paper="no exchange: the step-matched reference"
    ),
    "selective-fd": Card(
        sparse=True,
        paper="Shao et al. 2024, Selective-FD (Nature Communications, arXiv 2304.01731)",
        settings=("selective-quantile", "selective-kernel-width", "selective-entropy"),
    ),
    "self-distill": Card(
        personalised=True, paper="control (fedkd): the same distillation steps with no peer knowledge"
    ),
}
