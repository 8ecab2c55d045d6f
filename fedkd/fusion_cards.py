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


@dataclass(frozen=True)
class Card:
    # predictions | weights | weights+predictions | nothing | class-predictions | class-prototypes
    # (server/exchanges.py; the class- kinds are per-class statistics of private data, no transfer set)
    uploads: str = "predictions"
    sparse: bool = False  # clients upload only the rows ``upload_mask`` keeps (mask + values)
    personalised: bool = False  # each client gets its own target or model
    paper: str = ""  # where the method comes from
    settings: tuple[str, ...] = ()  # the config keys only this algorithm reads

    @property
    def uploads_predictions(self) -> bool:
        return "predictions" in self.uploads.split("+")

    @property
    def uploads_weights(self) -> bool:
        return "weights" in self.uploads.split("+")

    @property
    def uploads_class_knowledge(self) -> bool:
        """Per-class statistics of the private data (C rows), no transfer set: the data-free family."""
        return self.uploads in CLASS_UPLOADS

    @property
    def noisable(self) -> bool:
        """Whether the privacy mechanism can noise the uploads: rows on the simplex."""
        return self.uploads in ("predictions", "class-predictions")

    def upload_summary(self) -> str:
        """What one client sends after local training, in words."""
        if self.uploads in CLASS_UPLOADS:
            return CLASS_UPLOADS[self.uploads]
        if self.uploads == "predictions":
            return "sparse predictions (mask + values)" if self.sparse else "predictions"
        return self.uploads.replace("+", " + ")

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
    "class-predictions": "per-class mean predictions (C x C)",
    "class-prototypes": "per-class prototypes (C x D) + class counts",
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
        uploads="class-predictions",
        personalised=True,
        paper="Jeong et al. 2018, FD (NeurIPS MLPCD workshop, arXiv 1811.11479); data-free",
        settings=("fd-weight",),
    ),
    "fedavg": Card(uploads="weights", paper="McMahan et al. 2017, FedAvg (AISTATS, arXiv 1602.05629)"),
    "feddf": Card(
        uploads="weights+predictions",
        paper="Lin et al. 2020, FedDF (NeurIPS, arXiv 2006.07242)",
        settings=("feddf-server-steps",),
    ),
    "fedproto": Card(
        uploads="class-prototypes",
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
    "local": Card(uploads="nothing", personalised=True, paper="no exchange: the step-matched reference"),
    "selective-fd": Card(
        sparse=True,
        paper="Shao et al. 2024, Selective-FD (Nature Communications, arXiv 2304.01731)",
        settings=("selective-quantile", "selective-kernel-width", "selective-entropy"),
    ),
    "self-distill": Card(
        personalised=True, paper="control (fedkd): the same distillation steps with no peer knowledge"
    ),
}
