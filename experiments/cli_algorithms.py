"""`fedkd algorithms`: every fusion algorithm, what its clients upload, whether it personalises,
its own config keys and its paper, read from the registry (a new algorithm lists itself)."""

from __future__ import annotations

import click

HEADER = ("algorithm", "uploads", "personalised", "compressible", "paper")


def algorithm_rows() -> list[tuple[str, ...]]:
    """One row per registered algorithm (HEADER's columns), alphabetically."""
    from fedkd.fusion import FUSIONS

    rows = []
    for name in FUSIONS.names():
        algorithm = FUSIONS.get(name)
        rows.append(
            (
                name,
                algorithm.upload_summary(),
                "yes" if algorithm.personalised else "no",
                "yes" if algorithm.uploads_predictions else "-",
                algorithm.paper,
            )
        )
    return rows


def listing(rows: list[tuple[str, ...]]) -> str:
    """Plain columns padded to the widest entry, then each algorithm's own config keys."""
    from fedkd.fusion import FUSIONS

    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [HEADER, *rows]
    ]
    lines += [
        "",
        "settings (fedkd keys --toml explains each; compression keys apply to every compressible one):",
    ]
    lines += [f"  {row[0]}: {', '.join(FUSIONS.get(row[0]).settings) or '-'}" for row in rows]
    return "\n".join(lines)


@click.command("algorithms")
def algorithms() -> None:
    """List every fusion algorithm: what a client uploads, whether it is personalised, whether its
    prediction uploads can be compressed (compression, compression-k, compression-bits), its paper
    and its own config keys."""
    click.echo(listing(algorithm_rows()))
