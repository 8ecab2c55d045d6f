"""`fedkd algorithms`: every fusion algorithm, what its clients upload, whether it personalises,
whether its uploads can be compressed, its own config keys and its paper, from the algorithms'
cards (fedkd/fusion_cards.py: the flags the algorithms and validation use too). The cards are
plain data, so the listing starts without numpy, torch or Flower."""

from __future__ import annotations

import click

HEADER = ("algorithm", "uploads", "personalised", "compressible", "paper")


def algorithm_rows() -> list[tuple[str, ...]]:
    """One row per algorithm (HEADER's columns), alphabetically."""
    from fedkd.fusion_cards import CARDS

    return [
        (
            name,
            card.upload_summary(),
            "yes" if card.personalised else "no",
            "yes" if card.compressible else "-",
            card.paper,
        )
        for name, card in sorted(CARDS.items())
    ]


def listing(rows: list[tuple[str, ...]]) -> str:
    """Plain columns padded to the widest entry, then each algorithm's own config keys."""
    from fedkd.fusion_cards import CARDS

    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [HEADER, *rows]
    ]
    lines += [
        "",
        "settings (fedkd keys --toml explains each; compression keys apply to every compressible one):",
    ]
    lines += [f"  {row[0]}: {', '.join(CARDS[row[0]].settings) or '-'}" for row in rows]
    return "\n".join(lines)


@click.command("algorithms")
def algorithms() -> None:
    """List every fusion algorithm: what a client uploads, whether it is personalised, whether its
    prediction uploads can be compressed (compression, compression-k, compression-bits), its paper
    and its own config keys."""
    click.echo(listing(algorithm_rows()))
