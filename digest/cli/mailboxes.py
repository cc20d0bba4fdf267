"""Commands on the mail that comes back: unsubscribes and bounces."""

from __future__ import annotations

import click

from digest.cli.base import cli, common, example, state


@cli.group(epilog=example("digest unsubscribes process --dry-run"))
def unsubscribes() -> None:
    """Unsubscribe requests that arrive by mail (the List-Unsubscribe mailto)."""


@unsubscribes.command("process", epilog=example("digest unsubscribes process --dry-run"))
@click.option(
    "--dry-run", is_flag=True, help="Show what would be done; change neither store nor mailbox."
)
@common
def process_unsubscribes(dry_run: bool) -> None:
    """Apply the unsubscribe tokens in the subjects of the unread mail of [unsubscribe_mailbox].

    Each message with a valid token is processed (its subscriber unsubscribed from that
    newsletter) and marked seen, then moved or deleted as `processed` says; every other
    message stays unread where it is. Running it again changes nothing more. Tokens are
    never shown.
    """
    from digest.mailboxes.mailbox import open_mailbox, process_mailbox
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        with open_mailbox(settings) as mailbox:
            report = process_mailbox(settings, store, mailbox, dry_run=dry_run)
    finally:
        store.close()
    would = "would be " if dry_run else ""
    for result in report.results:
        if result.outcome.processed:
            click.echo(
                f"message {result.key}: {would}processed: {result.outcome.value}, "
                f"subscriber {result.subscriber_id} of {result.newsletter}"
            )
        else:
            click.echo(
                f"message {result.key} from {result.sender or '(no sender)'}: left alone: "
                f"{result.outcome.value}"
            )
    click.echo(report.summary())


@cli.group(epilog=example("digest bounces process --dry-run"))
def bounces() -> None:
    """Bounces and complaint reports that arrive after sending (see [bounces])."""


@bounces.command("process", epilog=example("digest bounces process --dry-run"))
@click.option(
    "--dry-run", is_flag=True, help="Show what would be done; change neither store nor mailbox."
)
@common
def process_bounces(dry_run: bool) -> None:
    """Record the bounces (DSNs) and complaint reports (ARF) in the unread mail of [bounces].

    Each report is recorded on the delivery it concerns, found by its signed return path
    or the returned message's Message-ID. A hard bounce (5.x.x) or a complaint puts the
    address on the suppression list; soft bounces (4.x.x) do past `soft_limit` within
    `soft_days`; a policy refusal (5.7.x) and a delay warning are only recorded.
    Processed messages are marked seen, then moved or deleted as `processed` says;
    everything else stays unread. Running it again changes nothing more.
    """
    from digest.mailboxes.bounces import open_bounce_mailbox
    from digest.mailboxes.bounces import process_bounces as process
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        with open_bounce_mailbox(settings) as mailbox:
            report = process(settings, store, mailbox, dry_run=dry_run)
    finally:
        store.close()
    would = "would be " if dry_run else ""
    for result in report.results:
        if result.outcome.processed:
            status = f" {result.status}" if result.status else ""
            suppressed = f", address {would}suppressed" if result.suppressed else ""
            click.echo(
                f"message {result.key}: {would}processed: {result.outcome.value}{status}, "
                f"delivery {result.delivery_id}{suppressed}"
            )
        else:
            click.echo(f"message {result.key}: left alone: {result.outcome.value}")
    click.echo(report.summary())
