"""Run a click command the way every clipguard entry point does: a readable error, exit code 2.

Used by the ``clipguard`` command (pipeline/cli.py) and by ``python training/train.py``
(the Ray job entry point), so both report a :class:`~clipguard.errors.ClipguardError`
as one ``error: <kind>: <message>`` line on stderr instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from clipguard.errors import ClipguardError


def run_click_command(
    command: click.Command, argv: Sequence[str] | None = None, *, prog_name: str | None = None
) -> int:
    """Run ``command`` on ``argv`` (default: ``sys.argv[1:]``) and return its exit code."""
    try:
        result = command.main(args=list(argv) if argv is not None else None, prog_name=prog_name,
                              standalone_mode=False)  # fmt: skip
    except ClipguardError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0
