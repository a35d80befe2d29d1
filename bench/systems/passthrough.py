"""The ceiling: aiokafka consume-and-produce, one record out per record in, nothing decoded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bench.systems.aioloop import arguments, run


def passthrough(records: Sequence[Any]) -> list[tuple[bytes | None, bytes]]:
    return [(r.key, r.value) for r in records]


def main() -> None:
    args = arguments(__doc__ or "").parse_args()
    asyncio.run(run(args, passthrough))


if __name__ == "__main__":
    main()
