"""`fedkd algorithms`: every fusion algorithm, what its clients upload, whether it personalises,
whether its uploads can be compressed, its own config keys and its paper, from the algorithms'
cards (fedkd/fusion_cards.py: the flags the algorithms and validation use too). The built-ins'
cards are plain data, so without plugins the listing starts without numpy, torch or Flower; a
plugin algorithm (entry point group fedkd.algorithms) flies its own card, read once loaded."""

from __future__ import annotations

import click

from fedkd.fusion_cards import CARDS, Card

HEADER = ("algorithm", "uploads", "personalised", "compressible", "paper")


def algorithm_cards() -> dict[str, Card]:
    """Every algorithm's card, as ``FUSIONS.get(name).card`` holds it: built-ins from CARDS (no
    import of the algorithms), and with plugins installed, from the loaded registry."""
    from fedkd.registry import installed_plugins

    if not installed_plugins("algorithm"):
        return CARDS
    from fedkd.fusion import FUSIONS

    return {name: FUSIONS.get(name).card for name in FUSIONS.names()}


def algorithm_rows(cards: dict[str, Card]) -> list[tuple[str, ...]]:
    """One row per algorithm (HEADER's columns), alphabetically."""
    return [
        (
            name,
            card.upload_summary(),
            "yes" if card.personalised else "no",
            "yes" if card.compressible else "-",
            card.paper,
        )
        for name, card in sorted(cards.items())
    ]


def listing(cards: dict[str, Card]) -> str:
    """Plain columns padded to the widest entry, then each algorithm's own config keys."""
    rows = algorithm_rows(cards)
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [HEADER, *rows]
    ]
    lines += [
        "",
        "settings (fedkd keys --toml explains each; compression keys apply to every compressible one):",
    ]
    lines += [f"  {row[0]}: {', '.join(cards[row[0]].keys) or '-'}" for row in rows]
    return "\n".join(lines)


@click.command("algorithms")
def algorithms() -> None:
    """List every fusion algorithm: what a client uploads, whether it is personalised, whether its
    prediction uploads can be compressed (compression, compression-k, compression-bits), its paper
    and its own config keys."""
    click.echo(listing(algorithm_cards()))
