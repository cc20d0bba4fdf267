"""Message → Delivery: the ledger of an issue driven through a transport (claim,
send, record), by one or several sender processes, within the relays' limits; retries,
the dry run and the status of a send."""

__all__: list[str] = []
